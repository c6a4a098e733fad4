"""Type stub of the compiled core ``hashmatch.server._hashcore`` (hand-written).

Wire encoding shared by :meth:`Index.apply` and :meth:`Index.match_batch`:

- ``algs``: one byte per hash: 1 = MD5 (16-byte digest), 2 = SHA-1 (20),
  3 = SHA-256 (32), 4 = PDQ (32);
- ``hashes``: one 32-byte slot per hash, digest left-aligned, remaining bytes zero;
- ``add_ids``: one little-endian ``u64`` per added entry (opaque entry id, unique
  within a list);
- ``ref_ends`` / ``refs``: the stored reference of each added entry, as the change log's
  columns: one ``u32`` little-endian end offset per entry into ``refs`` (UTF-8,
  concatenated). A stored reference is the reference ID, then the entry's labels: for
  each, a zero byte, the key, ``=`` and the value, in key order (none: the ID alone).

Every malformed input raises :class:`ValueError`; nothing is applied then.
"""

import builtins
import os
from collections.abc import Sequence

class Index:
    """All hash lists of one serving process. Thread-safe."""

    def __init__(self) -> None: ...
    def configure_list(
        self,
        list_id: int,
        pdq_threshold: int,
        pdq_min_quality: int,
        name: str | None = None,
        exposed_labels: Sequence[str] = (),
        video_query_percent: int = 80,
        video_listed_percent: int = 0,
    ) -> None:
        """Create list ``list_id`` (u32) if absent, or change its thresholds.

        ``video_query_percent`` and ``video_listed_percent`` (0..=100, else
        :class:`ValueError`): the shares of frames a video match needs on each side.

        ``pdq_threshold`` must be in 0..=63 and ``pdq_min_quality`` in 0..=100,
        else :class:`ValueError`. ``name`` (answered in ``Reference.list``) is set when
        given; ``None`` keeps an existing list's name (a new list's is then ``""``).
        ``exposed_labels``: the label keys verdicts show (:func:`label_keys`; another key
        is a :class:`ValueError`); none when empty.
        """

    def set_list_state(self, list_id: int, version: int, quarantined: builtins.list[str]) -> None:
        """Set a list's served version (``Reference.list_version``) and its quarantined
        reference IDs (they answer NO_MATCH), in one snapshot. :class:`ValueError` if the
        list is unknown."""

    def set_policy(
        self,
        tenant: str,
        all_lists: bool,
        lists: builtins.list[int],
        allow_algs: bytes,
        allow_slots: bytes,
    ) -> None:
        """Set a platform's policy: unless ``all_lists``, only list ids in ``lists`` answer
        for it; a query hash it allow-listed (packed hashes: one alg byte + one 32-byte slot
        each) produces no hits for it: exact algorithms by equality, PDQ within Hamming
        distance 31 of an allow-listed PDQ hash. Replaces any earlier policy."""

    def remove_policy(self, tenant: str) -> None:
        """Forget a platform's policy: it then sees every list and has no allow-list."""

    def take_counts(self) -> builtins.list[tuple[str, int, str, int, float]]:
        """Match events counted by :meth:`Verdicts.encode` since the last call, cleared:
        ``(tenant, list_id, reference_id, matches, last_unix_time)``."""

    def reference_bytes(self, list_id: int) -> int:
        """Heap bytes held by a list's reference IDs (diagnostics)."""

    def match_request(
        self, raw: bytes, batch: bool, tenant: str, pdq_paused: bool = False
    ) -> Verdicts:
        """Read, validate and match a ``hashmatch.v1.MatchRequest`` (``batch=False``) or
        ``MatchBatchRequest`` from its wire bytes, for ``tenant``; releases the GIL.

        Never raises on any ``raw``: problems become :attr:`Verdicts.violations` (the call
        is refused) or per-item errors in the response (batch). Validation follows
        ``validation.match_item`` (texts included). Bytes that are not a protobuf message:
        ``("(request)", "the request is not a valid protobuf message")``. In a batch, an item
        whose body is not a valid message gets ``("items[i]", "is not a valid protobuf
        message")`` and one whose ``item_id`` is not UTF-8 ``("items[i].item_id", "is not
        valid UTF-8")``, as per-item errors.

        Matching: lists, references, list state and the tenant's policy are read from one
        snapshot; degenerate PDQ never matches; a PDQ query below a list's minimum quality
        is not matched against it; entries without a reference and quarantined references
        never answer; one ``Reference`` per (item, list, reference_id), first hit first (by
        query, list id, entry id). ``pdq_paused``: PDQ is not searched at all and every
        valid item with a PDQ hash gets a RESOURCE_EXHAUSTED error in :meth:`Verdicts.encode`.
        """

    def drop_list(self, list_id: int) -> None:
        """Remove a list and all its entries; no-op if absent."""

    def list_snapshot(self, list_id: int) -> ListSnapshot:
        """The configured list as served now (to write to a segment file)."""

    def install_list(self, file: CheckedList) -> None:
        """Replace the configured list's entries with those of the segment file read and
        checked by :func:`check_list_file`, mapped, and serve it at the file's version.
        A file serves once (ValueError the second time); nothing changes on an error."""

    def apply(
        self,
        list_id: int,
        add_algs: bytes,
        add_hashes: bytes,
        add_ids: bytes,
        del_algs: bytes,
        del_hashes: bytes,
        ref_ends: bytes | None = b"",
        refs: bytes | None = b"",
        version: int | None = None,
    ) -> None:
        """Apply one atomic batch to one list.

        Concurrent readers see all of it or none (entries, their references and
        ``version`` in one snapshot). Within a list an ``(alg, digest)`` pair is unique:
        adding an existing one replaces its id (and reference); deleting an absent one is a
        no-op. Deletions are applied before additions. References of deleted and replaced
        entries are released. Without ``ref_ends``/``refs`` (both empty) the added entries
        have no reference and never answer :meth:`match_request`. ``version``, when given,
        becomes the list's served version.
        :class:`ValueError` on an unknown list, unknown alg byte, lengths that do
        not agree (including reference columns not one per addition), non-zero padding,
        or references that are not UTF-8 with ordered end offsets.
        """

    def match_batch(
        self, algs: bytes, hashes: bytes, qualities: bytes, max_distances: bytes
    ) -> list[tuple[int, int, int]]:
        """Match ``n`` query hashes against every list; releases the GIL.

        ``qualities``: one byte per query, PDQ quality 0..=100 or 255 = unknown
        (unknown passes every list's minimum); a PDQ query below a list's
        ``pdq_min_quality`` is not matched against that list.
        ``max_distances``: one byte per query; 255 = each list's ``pdq_threshold``,
        otherwise ``min(list threshold, given)``. Ignored for exact algorithms.

        Returns every ``(query_index, list_id, entry_id)`` such that the digest is
        in the list (exact) or within the effective Hamming threshold (PDQ),
        sorted by query index, list id, entry id, without duplicates.
        """

    def match_batch_packed(
        self, algs: bytes, hashes: bytes, qualities: bytes, max_distances: bytes
    ) -> bytes:
        """:meth:`match_batch` with the matches packed into 16-byte records.

        Each record: ``query_index`` and ``list_id`` as little-endian ``u32``, then
        ``entry_id`` as little-endian ``u64`` (``struct`` format ``"<IIQ"``); same order.
        Much cheaper than building tuples when a batch has many matches.
        """

    def match_pdq_groups(
        self, hashes: bytes, group_sizes: bytes, qualities: bytes, max_distances: bytes
    ) -> list[tuple[int, int, int]]:
        """Match groups of PDQ hashes of one item each (e.g. its up to 8 dihedral variants).

        ``hashes``: 32 bytes per PDQ hash, groups consecutive; ``group_sizes``: one byte per
        group, 1..=8; ``qualities`` / ``max_distances``: one byte per group, as in
        :meth:`match_batch`. Returns every ``(group_index, list_id, entry_id)`` such that some
        hash of the group is within the effective threshold, sorted, without duplicates.
        Releases the GIL. :class:`ValueError` on malformed input.
        """

    def compact(self) -> None:
        """Run pending segment merges now (they otherwise run on a background thread)."""

    def segments(self, list_id: int) -> tuple[int, int, int, int, int]:
        """Segments per algorithm ``(md5, sha1, sha256, pdq, vpdq)`` of a list (diagnostics)."""

    def counts(self, list_id: int) -> tuple[int, int, int, int, int]:
        """``(md5, sha1, sha256, pdq, vpdq)`` entry counts; :class:`ValueError` if unknown."""

    def memory_bytes(self) -> int:
        """Approximate heap bytes held by all indexes."""

    def cross_size(self) -> tuple[int, int, int]:
        """(indexes, entries, bytes) of the cross-list PDQ indexes (diagnostics)."""

class Verdicts:
    """The answer to one :meth:`Index.match_request`."""

    @property
    def violations(self) -> builtins.list[tuple[str, str]]:
        """Whole-call ``(field, description)`` violations; empty when the call is fine. For a
        single request: its violations (unary Match raises INVALID_ARGUMENT with them)."""

    @property
    def items(self) -> int:
        """Items in the request (0 when a batch was refused before its items were read)."""

    @property
    def cost(self) -> int:
        """What the request costs a tenant's rate limit: ``items``, a video item counting
        one per frame searched."""

    @property
    def has_pdq(self) -> bool:
        """Some valid item carries a well-formed PDQ hash (degenerate or not)."""

    def video_queries(self, limit: int) -> builtins.list[tuple[int, builtins.list[bytes], bool]]:
        """``(item index, frames, matched)`` per video query: at most ``limit`` of its frames'
        32-byte PDQ values, spread over the video, and whether the item was answered a video
        match. Empty when PDQ was paused."""

    def pdq_queries(self) -> builtins.list[tuple[int, bytes, bool]]:
        """``(item index, 32-byte value, served)`` per non-degenerate PDQ hash searched;
        ``served``: it produced at least one hit answered to this tenant (after its
        subscriptions, allow-list and quarantine). Empty when PDQ was paused."""

    def encode(self, refuse_from: int = -1, retry_after_ms: int = 0) -> bytes:
        """The response wire bytes: a ``MatchResponse`` (single request; carrying ``error``
        when invalid) or a ``MatchBatchResponse`` (results in request order; ``b""`` when the
        batch has whole-call violations). Valid items with a PDQ hash whose index is
        ``>= refuse_from`` (when ``>= 0``), and all of them when PDQ was paused, get an error
        result: RESOURCE_EXHAUSTED with ErrorInfo ``ERROR_REASON_RATE_LIMITED`` and RetryInfo
        ``retry_after_ms``. Invalid items get INVALID_ARGUMENT with ErrorInfo and BadRequest
        (at most 100 violations), as ``errors.invalid``. The first call counts one match
        event per (item, list, reference) answered MATCH (see :meth:`Index.take_counts`).
        """

def set_max_threads(n: int) -> None:
    """Cap the threads one large batch call uses (process-wide); 0 = every core."""

def cpu_level() -> str:
    """Instruction-set level of the hot loops: "avx512", "avx2", "popcnt" or "portable"."""

class Changes:
    """One ``ApplyChangesRequest`` read from its wire bytes and checked (see ``parse_changes``)."""

    @property
    def list(self) -> str: ...
    @property
    def batch_id(self) -> str: ...
    @property
    def expected_version(self) -> int | None: ...
    @property
    def fingerprint(self) -> bytes: ...
    @property
    def violations(self) -> builtins.list[tuple[str, str]]: ...
    @property
    def violation_count(self) -> int: ...
    @property
    def n_upserts(self) -> int: ...
    @property
    def n_retirements(self) -> int: ...
    def upsert_packed(self) -> tuple[bytes, bytes]:
        """``(algs, slots)`` of the upserts, in the index's packed form."""

    def retire_packed(self) -> tuple[bytes, bytes]: ...
    def upsert_keys(self, prefix: bytes) -> builtins.list[bytes]:
        """Store keys of the upserts: ``prefix`` + algorithm byte + digest."""

    def retire_keys(self, prefix: bytes) -> builtins.list[bytes]: ...
    def references(self) -> builtins.list[bytes]:
        """The UTF-8 reference IDs of the upserts."""

    def ref_pairs(self, list_id: int, first_id: int) -> builtins.list[tuple[bytes, bytes]]:
        """``refs`` rows for the upserts as new entries, in id order: (list id u32 BE +
        entry id u64 BE, UTF-8 reference ID)."""

    def reference_columns(self) -> tuple[bytes, bytes]:
        """The change log's reference columns: u32 LE end offsets, then the UTF-8 bytes."""

    def term(self, i: int) -> int:
        """The list-digest term of upsert ``i``; :class:`ValueError` if out of range."""

    def terms_sum(self) -> int:
        """Sum of all upsert terms (mod 2**128)."""

class EntryPairs:
    """``entries`` rows made one at a time, in key order (see :func:`entry_pairs`)."""

    def __len__(self) -> int: ...
    def __iter__(self) -> EntryPairs: ...
    def __next__(self) -> tuple[bytes, bytes]: ...

def entry_pairs(batches: Sequence[Changes], prefix: bytes, first_id: int) -> EntryPairs:
    """``entries`` rows of the batches' upserts as new entries, in key order: (``prefix`` +
    algorithm + digest, entry id as u64 little-endian), the upserts numbered from
    ``first_id`` in batch order. Rows are made as they are taken: a group of millions
    holds 41 bytes per entry until then, not two bytes objects."""

def parse_changes(raw: bytes, pdq_min_quality: int) -> Changes:
    """Read an ``ApplyChangesRequest`` from its wire bytes; :class:`ValueError` if undecodable."""

def request_list(raw: bytes) -> str:
    """The ``list`` field of an ``ApplyChangesRequest``'s wire bytes (read before the rest,
    which is checked against that list's settings); :class:`ValueError` if undecodable."""

def stored_terms_sum(keys: list[bytes], refs: list[bytes], skip: int) -> int:
    """Sum (mod 2**128) of the list-digest terms of stored entries: ``keys[i]`` holds the
    algorithm at byte ``skip`` and the digest after it, ``refs[i]`` its reference ID.
    :class:`ValueError` when they do not pair up."""

def entry_term(alg: int, digest: bytes, reference: bytes) -> int:
    """The list-digest term of one entry."""

def encode_entries(field: int, algs: bytes, slots: bytes, ref_ends: bytes, refs: bytes) -> bytes:
    """Protobuf wire bytes of change-log upsert columns as repeated ``Entry`` field
    ``field``; :class:`ValueError` on mismatched columns."""

def encode_hashes(field: int, algs: bytes, slots: bytes) -> bytes:
    """Protobuf wire bytes of packed hashes as repeated ``Hash`` field ``field``."""

def label_keys() -> list[str]:
    """The label keys an entry may carry, in the order of their stored form."""

def is_degenerate_pdq(value: bytes) -> bool:
    """True for the PDQ hash of a flat or blank image (fewer than 16 or more than 240 set
    bits): the same rule refuses such list entries and skips such queries."""

class ListSnapshot:
    """One list as served at one moment."""

    @property
    def version(self) -> int: ...
    def digest(self) -> bytes:
        """The list digest of its entries (16 bytes), as the store computes it."""

    def save(
        self, path: os.PathLike[str] | str, list_id: int, version: int, epoch: int, digest: bytes
    ) -> int:
        """Write the list's segment file at `path` (whole, via a temporary file and a
        rename) saying (list_id, version, epoch, digest); returns its size in bytes."""

class CheckedList:
    """A segment file mapped and checked whole, not yet served (``Index.install_list``)."""

def check_list_file(
    path: os.PathLike[str] | str, list_id: int, version: int, epoch: int, digest: bytes
) -> CheckedList:
    """Map the segment file at ``path`` and check it whole: it must hold exactly (list_id,
    version, epoch, digest); ValueError ("segment file: ...") otherwise."""

def read_segment_info(path: os.PathLike[str] | str) -> tuple[int, int, int, bytes]:
    """(list_id, version, epoch, digest) from a segment file's header (checked)."""
