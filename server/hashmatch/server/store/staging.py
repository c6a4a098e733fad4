"""Whole-file uploads: batches staged apart from the list, then published in one commit.

A file pushed with UploadChanges in a whole mode is checked message by message as it
arrives and its messages are written to `staged` (nothing a reader looks at), each in its
own short write transaction, so the server holds one message at a time whatever the file's
size. When the stream ends cleanly, `publish` applies every staged message to the list in
ONE write transaction: each still gets its own version and change-log record (replicas
and followers replay them as they replay any batch), but all of them become visible at the
same commit, or none does. A refusal at publish time (a reused batch_id, a stale
expected_version) aborts that transaction: nothing of the file is kept.

A replacing upload also records the key of every hash the file upserts (`staged_keys`,
sorted by LMDB like the list's own entries); publishing it first retires, in batches of
their own, every entry of the list whose key the file does not hold.

Stages live only as long as the call that made them: the call discards its stage when it
ends, however it ends. A stage whose process died (a crash, a kill -9) is discarded by the
next whole-file upload: each stage names its process by pid and start time.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from hashmatch.server.core import SLOT, Changes, parse_changes
from hashmatch.server.store.env import Txn, prefixed
from hashmatch.server.store.errors import ListNotFound, StoreError, StoreFull
from hashmatch.server.store.keys import U32, U64, list_prefix
from hashmatch.server.store.lists import Lists
from hashmatch.server.store.records import ApplyOutcome, ListMeta

# Entries of the list read per step when looking for those a replacing file leaves out.
REST_SCAN = 65_536
# Entries retired per batch of a replacement (the server's largest batch is 100,000).
REST_BATCH = 10_000
# Upserts of a published file inserted together in key order (about 100 bytes each while
# the group is held): far fewer page writes than message by message.
PUBLISH_GROUP_ENTRIES = 1_000_000
# The batch_id of the k-th batch of entries a replacement retires, made from the list's
# version before the file: unique in the list's history, and no pushed file names its
# batches so.
REST_BATCH_ID = "~replace@{version}:{k}"
# Builds a batch retiring packed hashes: (batch_id, algorithms, 32-byte slots) -> Changes.
RetireBatch = Callable[[str, bytes, bytes], Changes]


class StageRefused(StoreError):
    """Publishing met a refusal (`cause`) at the staged message `index` (-1: a batch of the
    replacement's retirements); nothing of the file was committed."""

    def __init__(self, index: int, cause: StoreError, expected_version: int | None) -> None:
        super().__init__(str(cause))
        self.index = index
        self.cause = cause
        self.expected_version = expected_version


@dataclass(frozen=True)
class Published:
    outcomes: list[tuple[str, ApplyOutcome]]  # (batch_id, outcome) in commit order
    replaced: int  # entries retired because the file left them out


class Staging(Lists):
    def open_stage(self, list_id: int, actor: str) -> int:
        """A new, empty stage for a whole-file upload into list `list_id`; first discards
        the stages of processes that no longer run."""
        for stage in self._dead_stages():
            self.discard_stage(stage)
        with self._write() as txn:
            raw = txn.get(b"next_stage_id", db=self._db("meta"))
            stage = U64.unpack(raw)[0] if raw else 1
            txn.put(b"next_stage_id", U64.pack(stage + 1), db=self._db("meta"))
            pid = os.getpid()
            owner = {
                "pid": pid,
                "started": _started(pid),
                "list": list_id,
                "actor": actor,
                "at": time.time(),
            }
            txn.put(U64.pack(stage), json.dumps(owner).encode(), db=self._db("uploads"))
        return stage

    def stage(
        self, stage: int, first: int, messages: Sequence[bytes], keys: Sequence[bytes]
    ) -> None:
        """Appends messages (numbered from `first`) to a stage, and, for a replacement, the
        list keys (algorithm | hash) its upserts name. One commit."""
        prefix = U64.pack(stage)
        with self._write() as txn:
            txn.cursor(db=self._db("staged")).putmulti(
                (prefix + U32.pack(first + i), raw) for i, raw in enumerate(messages)
            )
            if keys:
                txn.cursor(db=self._db("staged_keys")).putmulti(
                    sorted((prefix + key, b"") for key in keys)
                )

    def discard_stage(self, stage: int) -> None:
        """Removes a stage and everything staged in it (nothing when already gone)."""
        prefix = U64.pack(stage)
        with self._write() as txn:
            for name in ("staged", "staged_keys"):
                _delete_prefix(txn, self._db(name), prefix)
            txn.delete(prefix, db=self._db("uploads"))

    def stages(self) -> list[int]:
        """Every stage in the store (open uploads, and those of dead processes)."""
        with self.read() as txn:
            keys = txn.cursor(db=self._db("uploads")).iternext(values=False)
            return [U64.unpack(key)[0] for key in keys]

    def publish(
        self, stage: int, list_name: str, *, actor: str, retire: RetireBatch | None = None
    ) -> Published:
        """Applies every staged message of `stage` to the list in one write transaction,
        in order; with `retire` (a replacement), first retires the entries whose keys the
        stage does not hold, in batches `retire` builds. StageRefused names the message a
        store refusal met; nothing is then committed."""
        outcomes: list[tuple[str, ApplyOutcome]] = []
        replaced = 0
        with self._write() as txn:
            meta = self._meta_of(txn, list_name)
            if retire is not None:
                for k, (algs, slots) in enumerate(self._rest(txn, meta, stage)):
                    batch_id = REST_BATCH_ID.format(version=meta.version, k=k)
                    outcome = self._publish_one(
                        txn, list_name, retire(batch_id, algs, slots), -1, actor
                    )
                    outcomes.append((batch_id, outcome))
                    replaced += outcome.retired
            staged = prefixed(txn, self._db("staged"), U64.pack(stage))
            index = 0
            for group in _groups(staged, meta.pdq_min_quality):
                inserted = self._insert_new_entries(txn, list_name, group)
                for changes in group:
                    outcome = self._publish_one(txn, list_name, changes, index, actor, inserted)
                    outcomes.append((changes.batch_id, outcome))
                    index += 1
        return Published(outcomes, replaced)

    def _publish_one(
        self,
        txn: Txn,
        list_name: str,
        changes: Changes,
        index: int,
        actor: str,
        inserted: bool = False,
    ) -> ApplyOutcome:
        try:
            return self._apply_one(txn, list_name, changes, actor, inserted)
        except StoreFull:
            raise
        except StoreError as exc:
            raise StageRefused(index, exc, changes.expected_version) from None

    def _meta_of(self, txn: Txn, list_name: str) -> ListMeta:
        raw = txn.get(list_name.encode(), db=self._db("lists"))
        if raw is None:
            raise StageRefused(0, ListNotFound(list_name), None)
        return ListMeta.from_json(raw)

    def _rest(self, txn: Txn, meta: ListMeta, stage: int) -> Iterator[tuple[bytes, bytes]]:
        """(algorithms, slots) of the list's entries the stage's keys leave out, at most
        REST_BATCH at a time. Each batch is retired before the next is looked for, so the
        scan starts again just past the last key it read."""
        entries, marks = self._db("entries"), self._db("staged_keys")
        list_start = list_prefix(meta.id)
        stage_prefix = U64.pack(stage)
        start = list_start
        while True:
            keys: list[bytes] = []
            cur = txn.cursor(db=entries)
            found = cur.set_range(start)
            while found and len(keys) < REST_SCAN:
                key = cur.key()
                if not key.startswith(list_start):
                    break
                keys.append(key)
                found = cur.next()
            cur.close()
            if not keys:
                return
            start = keys[-1] + b"\0"
            cut = len(list_start)
            wanted = [stage_prefix + key[cut:] for key in keys]
            kept = {k for k, _ in txn.cursor(db=marks).getmulti(wanted)}
            rest = [key for key, mark in zip(keys, wanted, strict=True) if mark not in kept]
            for i in range(0, len(rest), REST_BATCH):
                chunk = rest[i : i + REST_BATCH]
                algs = bytes(key[cut] for key in chunk)
                slots = b"".join(key[cut + 1 :].ljust(SLOT, b"\0") for key in chunk)
                yield algs, slots

    def _dead_stages(self) -> list[int]:
        dead = []
        with self.read() as txn:
            for key, raw in txn.cursor(db=self._db("uploads")):
                owner: dict[str, Any] = json.loads(raw)
                if _started(int(owner["pid"])) != owner["started"]:
                    dead.append(U64.unpack(key)[0])
        return dead


def _groups(staged: Iterator[tuple[bytes, bytes]], pdq_min_quality: int) -> Iterator[list[Changes]]:
    """The staged messages, parsed, in order, a group of at least PUBLISH_GROUP_ENTRIES
    changes at a time (the last may hold fewer): what one pass of new entries inserts
    (Lists._insert_new_entries), while the file's messages are not all parsed at once."""
    group: list[Changes] = []
    size = 0
    for _, raw in staged:
        changes = parse_changes(raw, pdq_min_quality)
        group.append(changes)
        size += changes.n_upserts + changes.n_retirements
        if size >= PUBLISH_GROUP_ENTRIES:
            yield group
            group, size = [], 0
    if group:
        yield group


def _started(pid: int) -> str | None:
    """What tells process `pid` from a later one given the same pid (in a container a
    restarted server often gets its predecessor's): its start time in clock ticks since
    boot where /proc has it, else only whether it runs. None when it does not run."""
    if os.path.exists("/proc/self/stat"):
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as f:
                # The command name (field 2) may hold spaces; it ends at the last ')'.
                return f.read().rpartition(")")[2].split()[19]
        except FileNotFoundError:
            return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return "running"


def _delete_prefix(txn: Txn, db: Any, prefix: bytes) -> None:
    cur = txn.cursor(db=db)
    found = cur.set_range(prefix)
    # delete() moves the cursor to the next key.
    while found and cur.key().startswith(prefix):
        found = cur.delete()
