"""MatchService: a platform sends the hashes of an upload and gets a verdict.

The response names only the matching lists and reference IDs. Query hashes and item IDs
are used for the lookup and then dropped: never stored, never logged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence

from hashmatch.client.algorithms import DIGEST_LENGTHS, PDQ
from hashmatch.server.core import (
    LIST_THRESHOLD,
    SLOT,
    UNKNOWN_QUALITY,
    is_degenerate_pdq,
    pack_hashes,
)
from hashmatch.server.errors import ProbeThrottled, Violation, invalid
from hashmatch.server.matching.probes import ProbeDetector
from hashmatch.server.matching.stats import MatchCounts
from hashmatch.server.metrics import Metrics
from hashmatch.server.rpc.decode import Undecodable, lenient_deserializer
from hashmatch.server.rpc.status import to_status
from hashmatch.server.services import validation
from hashmatch.server.services.access import require_role
from hashmatch.server.services.validation import QueryHash
from hashmatch.server.store import Role, Store, Tenant
from hashmatch.server.sync.follower import IndexFollower, ServedList
from hashmatch.v1 import match_pb2

_LENGTHS = dict(DIGEST_LENGTHS)
# Characters of an item_id that certainly fit MAX_ITEM_ID_BYTES in UTF-8 (4 bytes each).
_FAST_ID_CHARS = validation.MAX_ITEM_ID_BYTES // 4
_PAD = {n: bytes(SLOT - n) for n in _LENGTHS.values()}
# Per-query distance bytes for the core: each list's own threshold.
_THRESHOLDS = bytes([LIST_THRESHOLD]) * (validation.MAX_MATCH_BATCH_ITEMS * 4)


class _Queries:
    """The query hashes of one call, packed for the core as they are read.

    `owners[k]` is the item (index in the request) of query `k`; `packed` keeps
    (algorithm, digest) pairs for the allow-list and probe checks. Degenerate PDQ hashes
    are left out (blank or flat images would match each other); `has_pdq` still records
    that the call asked about PDQ.
    """

    __slots__ = ("algs", "has_pdq", "owners", "packed", "qualities", "slots")

    def __init__(self) -> None:
        self.owners: list[int] = []
        self.packed: list[tuple[int, bytes]] = []
        self.algs = bytearray()
        self.slots = bytearray()
        self.qualities = bytearray()
        self.has_pdq = False

    def add(self, owner: int, algorithm: int, value: bytes, quality: int | None) -> None:
        if algorithm == PDQ:
            self.has_pdq = True
            if is_degenerate_pdq(value):
                return
        self.owners.append(owner)
        self.packed.append((algorithm, value))
        self.algs.append(algorithm)
        self.slots += value
        self.slots += _PAD[len(value)]
        self.qualities.append(UNKNOWN_QUALITY if quality is None else quality)

    def add_all(self, owner: int, queries: Sequence[QueryHash]) -> None:
        for q in queries:
            self.add(owner, q.algorithm, q.value, q.quality)


def _add_plain(item: match_pb2.MatchRequest, owner: int, queries: _Queries) -> str | None:
    """Adds the item's hashes and returns its item_id when it is valid by a quick,
    conservative test; else adds nothing and returns None.

    Accepts only what `validation.match_item` accepts (short printable IDs, known
    algorithms with the right digest length, PDQ quality 0-100); anything else goes through
    the full check, which names the offending field.
    """
    item_id = item.item_id
    if item_id and (len(item_id) > _FAST_ID_CHARS or not item_id.isprintable()):
        return None
    hashes = item.hashes
    if not hashes or len(hashes) > validation.MAX_HASHES_PER_ITEM:
        return None
    if len(hashes) == 1:  # the usual shape: nothing to undo on failure
        h = hashes[0]
        alg = h.algorithm
        value = h.value
        if _LENGTHS.get(alg) != len(value):
            return None
        if h.HasField("quality"):
            if alg != PDQ or h.quality > 100:
                return None
            queries.add(owner, alg, value, h.quality)
        else:
            queries.add(owner, alg, value, None)
        return item_id
    checked = []
    for h in hashes:
        alg = h.algorithm
        value = h.value
        if _LENGTHS.get(alg) != len(value):
            return None
        if h.HasField("quality"):
            if alg != PDQ or h.quality > 100:
                return None
            checked.append((alg, value, h.quality))
        else:
            checked.append((alg, value, None))
    for alg, value, quality in checked:
        queries.add(owner, alg, value, quality)
    return item_id


# -- responses, encoded directly -------------------------------------------------------
#
# Most answers are NO_MATCH with the caller's item_id. Their wire form is short and fixed
# (MatchResponse field 1 item_id, field 2 verdict), so they are written as bytes instead of
# built as messages and serialized; the RPC layer sends bytes as they are. Matches and
# errors are built as messages. Within a MatchBatchResponse every result is field 1.


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_NO_MATCH_TAIL = b"\x10" + _varint(match_pb2.VERDICT_NO_MATCH)
# A NO_MATCH response without an item_id, alone and as a batch result.
_NO_MATCH_BARE = _NO_MATCH_TAIL
_NO_MATCH_BARE_RESULT = b"\x0a" + _varint(len(_NO_MATCH_BARE)) + _NO_MATCH_BARE
# The bytes before an item_id of n UTF-8 bytes, alone and as a batch result.
_ID_HEAD = [b"\x0a" + _varint(n) for n in range(validation.MAX_ITEM_ID_BYTES + 1)]
_RESULT_HEAD = [
    b"\x0a" + _varint(len(head) + n + len(_NO_MATCH_TAIL)) + head for n, head in enumerate(_ID_HEAD)
]


def _no_match(item_id: str) -> bytes:
    if not item_id:
        return _NO_MATCH_BARE
    raw = item_id.encode()
    return b"".join((_ID_HEAD[len(raw)], raw, _NO_MATCH_TAIL))


def _matched(item_id: str, references: list[match_pb2.Reference]) -> bytes:
    return match_pb2.MatchResponse(
        item_id=item_id, verdict=match_pb2.VERDICT_MATCH, references=references
    ).SerializeToString()


def _failed(item_id: str, violations: list[Violation]) -> bytes:
    error = to_status(invalid(violations))
    return match_pb2.MatchResponse(item_id=item_id, error=error).SerializeToString()


def _batch_response(
    item_ids: Sequence[str],
    references: Sequence[list[match_pb2.Reference]],
    errors: dict[int, bytes],
) -> bytes:
    """A MatchBatchResponse: results in request order."""
    out: list[bytes] = []
    append = out.append
    result_head = _RESULT_HEAD
    tail = _NO_MATCH_TAIL
    for i, item_id in enumerate(item_ids):
        refs = references[i]
        if refs:
            one = _matched(item_id, refs)
        elif errors and i in errors:
            one = errors[i]
        elif not item_id:
            append(_NO_MATCH_BARE_RESULT)
            continue
        else:
            raw = item_id.encode()
            append(result_head[len(raw)])
            append(raw)
            append(tail)
            continue
        append(b"\x0a")
        append(_varint(len(one)))
        append(one)
    return b"".join(out)


class MatchServicer:
    # Cheap enough to answer on the event loop.
    INLINE = frozenset({"Match", "MatchBatch"})
    RAW = frozenset({"MatchStream"})

    def __init__(
        self,
        store: Store,
        follower: IndexFollower,
        counts: MatchCounts | None = None,
        metrics: Metrics | None = None,
        probes: ProbeDetector | None = None,
    ) -> None:
        self.store = store
        self.follower = follower
        # Match events per (list, reference), flushed to the store by StatsFlusher.
        self.counts = counts
        self.metrics = metrics
        self.probes = probes or ProbeDetector(on_flag=self._flagged)

    def _flagged(self, tenant: str, near_misses: int) -> None:
        cooldown = self.probes.policy.cooldown
        self.store.record_audit(
            "probe-detection", "throttle", tenant=tenant, near_misses=near_misses, seconds=cooldown
        )

    def Match(self, request: match_pb2.MatchRequest, tenant: Tenant) -> bytes:
        """A MatchResponse, encoded."""
        require_role(tenant, Role.PLATFORM)
        queries = _Queries()
        item_id = _add_plain(request, 0, queries)
        if item_id is None:
            item_id = request.item_id
            checked, violations = validation.match_item(item_id, request.hashes)
            if violations:
                raise invalid(violations)
            queries.add_all(0, checked)
        refs = self._references(tenant, queries, 1)[0]
        return _matched(item_id, refs) if refs else _no_match(item_id)

    def MatchBatch(self, request: match_pb2.MatchBatchRequest, tenant: Tenant) -> bytes:
        """A MatchBatchResponse, encoded."""
        require_role(tenant, Role.PLATFORM)
        items = request.items
        n = len(items)
        if n == 0:
            raise invalid([Violation("items", "at least one item is required")])
        if n > validation.MAX_MATCH_BATCH_ITEMS:
            raise invalid(
                [Violation("items", f"at most {validation.MAX_MATCH_BATCH_ITEMS} items, got {n}")]
            )
        queries = _Queries()
        item_ids: list[str] = []
        errors: dict[int, bytes] = {}
        for i, item in enumerate(items):
            item_id = _add_plain(item, i, queries)
            if item_id is None:
                item_id = item.item_id
                checked, violations = validation.match_item(item_id, item.hashes, f"items[{i}].")
                if violations:
                    errors[i] = _failed(item_id, violations)
                else:
                    queries.add_all(i, checked)
            item_ids.append(item_id)
        return _batch_response(item_ids, self._references(tenant, queries, n), errors)

    async def MatchStream(
        self,
        requests: AsyncIterator[bytes],
        tenant: Tenant,
        meter: Callable[[int], None],
    ) -> AsyncIterator[bytes]:
        """One response (encoded) per request, in order; an invalid item gets its own error."""
        require_role(tenant, Role.PLATFORM)
        decode = lenient_deserializer(match_pb2.MatchRequest)
        async for raw in requests:
            meter(1)
            request = decode(raw)
            if isinstance(request, Undecodable):
                violation = Violation(request.field or "(request)", request.description)
                yield _failed("", [violation])
                continue
            queries = _Queries()
            item_id = _add_plain(request, 0, queries)
            if item_id is None:
                item_id = request.item_id
                checked, violations = validation.match_item(item_id, request.hashes)
                if violations:
                    yield _failed(item_id, violations)
                    continue
                queries.add_all(0, checked)
            refs = self._references(tenant, queries, 1)[0]
            yield _matched(item_id, refs) if refs else _no_match(item_id)

    def _references(
        self, tenant: Tenant, queries: _Queries, n_items: int
    ) -> list[list[match_pb2.Reference]]:
        """The references of each of `n_items` items; PDQ refused while the tenant is
        throttled for probing."""
        if queries.has_pdq:
            wait = self.probes.throttled_for(tenant.name)
            if wait:
                raise ProbeThrottled(
                    "PDQ queries from this tenant are paused: its recent queries look like a "
                    "probe of a listed hash",
                    retry_after=wait,
                )
        return self._match(queries, n_items, tenant.name)

    def match(
        self, items: Sequence[Sequence[QueryHash]], tenant: str
    ) -> list[list[match_pb2.Reference]]:
        """Every (list, reference) each item matches for this tenant, in one call into the
        core: its subscriptions and allow-list apply, quarantined references do not match."""
        queries = _Queries()
        for item_index, checked in enumerate(items):
            queries.add_all(item_index, checked)
        return self._match(queries, len(items), tenant)

    def _match(
        self, queries: _Queries, n_items: int, tenant: str
    ) -> list[list[match_pb2.Reference]]:
        owners = queries.owners
        packed = queries.packed
        out: list[list[match_pb2.Reference]] = [[] for _ in range(n_items)]
        if not packed:
            return out
        hits = self.follower.index.match_batch(
            bytes(queries.algs),
            bytes(queries.slots),
            bytes(queries.qualities),
            _THRESHOLDS[: len(packed)]
            if len(packed) <= len(_THRESHOLDS)
            else bytes([LIST_THRESHOLD]) * len(packed),
        )
        policy = self.follower.platform(tenant)
        if hits and policy.allow_id is not None:
            hits = self._not_allowed(hits, packed, policy.allow_id)
        if queries.has_pdq:  # nothing to watch otherwise
            self._watch_probes(tenant, packed, hits)
        if not hits:
            return out
        keyed: dict[tuple[int, int, int], None] = {}
        for query_index, list_id, entry_id in hits:
            keyed[(owners[query_index], list_id, entry_id)] = None
        keys = list(keyed)
        served = self.follower.lists()
        refs = self.store.references([(lid, eid) for _, lid, eid in keys])
        seen: set[tuple[int, int, str]] = set()
        for (item_index, lid, _), ref in zip(keys, refs, strict=True):
            listed = served.get(lid)
            # None: retired after the index snapshot was taken, so no longer a match.
            if ref is None or listed is None or (item_index, lid, ref) in seen:
                continue
            if ref in listed.quarantined or not policy.wants(listed.name):
                continue
            seen.add((item_index, lid, ref))
            out[item_index].append(
                match_pb2.Reference(list=listed.name, reference_id=ref, list_version=listed.version)
            )
        self._count(seen, served)
        return out

    def _not_allowed(
        self, hits: list[tuple[int, int, int]], packed: list[tuple[int, bytes]], allow_id: int
    ) -> list[tuple[int, int, int]]:
        """Drops hits whose query hash the tenant allow-listed (only hit queries are checked)."""
        hit_queries = sorted({q for q, _, _ in hits})
        algs, slots = pack_hashes(packed[q] for q in hit_queries)
        n = len(hit_queries)
        allowed = {
            hit_queries[q]
            for q, lid, _ in self.follower.allow_index.match_batch(
                algs, slots, bytes([UNKNOWN_QUALITY]) * n, bytes([LIST_THRESHOLD]) * n
            )
            if lid == allow_id
        }
        return [h for h in hits if h[0] not in allowed]

    def _watch_probes(
        self, tenant: str, packed: list[tuple[int, bytes]], hits: list[tuple[int, int, int]]
    ) -> None:
        matched = {q for q, _, _ in hits}
        pdq = [(q, value) for q, (alg, value) in enumerate(packed) if alg == PDQ]
        if pdq:
            flagged = self.probes.observe(
                tenant,
                [v for q, v in pdq if q in matched],
                [v for q, v in pdq if q not in matched],
            )
            if flagged and self.metrics is not None:
                self.metrics.probe_flags.inc()

    def _count(self, seen: set[tuple[int, int, str]], served: dict[int, ServedList]) -> None:
        """One match event per (item, list, reference): in memory, flushed later."""
        if not seen:
            return
        if self.counts is not None:
            self.counts.add([(lid, ref) for _, lid, ref in seen])
        if self.metrics is not None:
            for _, lid, _ in seen:
                self.metrics.matches.labels(served[lid].name).inc()
