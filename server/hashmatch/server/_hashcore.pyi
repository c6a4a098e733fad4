"""Type stub of the compiled core ``hashmatch.server._hashcore`` (hand-written).

Wire encoding shared by :meth:`Index.apply` and :meth:`Index.match_batch`:

- ``algs``: one byte per hash: 1 = MD5 (16-byte digest), 2 = SHA-1 (20),
  3 = SHA-256 (32), 4 = PDQ (32);
- ``hashes``: one 32-byte slot per hash, digest left-aligned, remaining bytes zero;
- ``add_ids``: one little-endian ``u64`` per added entry (opaque entry id).

Every malformed input raises :class:`ValueError`; nothing is applied then.
"""

import builtins

class Index:
    """All hash lists of one serving process. Thread-safe."""

    def __init__(self) -> None: ...
    def configure_list(self, list_id: int, pdq_threshold: int, pdq_min_quality: int) -> None:
        """Create list ``list_id`` (u32) if absent, or change its thresholds.

        ``pdq_threshold`` must be in 0..=63 and ``pdq_min_quality`` in 0..=100,
        else :class:`ValueError`.
        """

    def drop_list(self, list_id: int) -> None:
        """Remove a list and all its entries; no-op if absent."""

    def apply(
        self,
        list_id: int,
        add_algs: bytes,
        add_hashes: bytes,
        add_ids: bytes,
        del_algs: bytes,
        del_hashes: bytes,
    ) -> None:
        """Apply one atomic batch to one list.

        Concurrent :meth:`match_batch` callers see all of it or none. Within a list
        an ``(alg, digest)`` pair is unique: adding an existing one replaces its id;
        deleting an absent one is a no-op. Deletions are applied before additions.
        :class:`ValueError` on an unknown list, unknown alg byte, lengths that do
        not agree, or non-zero padding.
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

    def segments(self, list_id: int) -> tuple[int, int, int, int]:
        """Segments per algorithm ``(md5, sha1, sha256, pdq)`` of a list (diagnostics)."""

    def counts(self, list_id: int) -> tuple[int, int, int, int]:
        """``(md5, sha1, sha256, pdq)`` entry counts; :class:`ValueError` if unknown."""

    def memory_bytes(self) -> int:
        """Approximate heap bytes held by all indexes."""

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

    def entry_pairs(self, prefix: bytes, first_id: int) -> builtins.list[tuple[bytes, bytes]]:
        """``entries`` rows for the upserts as new entries, sorted by key: (``prefix`` +
        algorithm + digest, entry id ``first_id + i`` as u64 little-endian)."""

    def ref_pairs(self, list_id: int, first_id: int) -> builtins.list[tuple[bytes, bytes]]:
        """``refs`` rows for the upserts as new entries, in id order: (list id u32 BE +
        entry id u64 BE, UTF-8 reference ID)."""

    def reference_columns(self) -> tuple[bytes, bytes]:
        """The change log's reference columns: u32 LE end offsets, then the UTF-8 bytes."""

    def term(self, i: int) -> int:
        """The list-digest term of upsert ``i``; :class:`ValueError` if out of range."""

    def terms_sum(self) -> int:
        """Sum of all upsert terms (mod 2**128)."""

def parse_changes(raw: bytes, pdq_min_quality: int) -> Changes:
    """Read an ``ApplyChangesRequest`` from its wire bytes; :class:`ValueError` if undecodable."""

def entry_term(alg: int, digest: bytes, reference: bytes) -> int:
    """The list-digest term of one entry."""

def encode_entries(field: int, algs: bytes, slots: bytes, ref_ends: bytes, refs: bytes) -> bytes:
    """Protobuf wire bytes of change-log upsert columns as repeated ``Entry`` field
    ``field``; :class:`ValueError` on mismatched columns."""

def encode_hashes(field: int, algs: bytes, slots: bytes) -> bytes:
    """Protobuf wire bytes of packed hashes as repeated ``Hash`` field ``field``."""

def is_degenerate_pdq(value: bytes) -> bool:
    """True for the PDQ hash of a flat or blank image (fewer than 16 or more than 240 set
    bits): the same rule refuses such list entries and skips such queries."""
