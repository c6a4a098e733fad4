"""The core's match path on bytes (``Index.match_request`` / ``Verdicts``), checked through
the binding against the protobuf runtime, an independent model of the field rules and a
brute-force
oracle."""

from __future__ import annotations

import random
import struct
import time
from typing import Any

import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from hashmatch.server._hashcore import Index, is_degenerate_pdq
from hashmatch.v1 import hashes_pb2, match_pb2


class _V:
    """A field violation of the test's own model (no server code shared)."""

    def __init__(self, field: str, description: str) -> None:
        self.field, self.description = field, description

    def __eq__(self, other: object) -> bool:
        return (getattr(other, "field", None), getattr(other, "description", None)) == (
            self.field,
            self.description,
        )


def expected_violations(item_id: str, hashes: Any, prefix: str = "") -> list[_V]:
    """The match-request rules as the contract states them, written out independently."""
    out: list[_V] = []
    size = len(item_id.encode("utf-8"))
    if size > 256:
        out.append(_V(f"{prefix}item_id", f"must be at most 256 bytes, got {size}"))
    elif any(ord(c) < 0x20 or ord(c) == 0x7F for c in item_id):
        out.append(_V(f"{prefix}item_id", "must not contain control characters"))
    if not hashes:
        out.append(_V(f"{prefix}hashes", "at least one hash is required"))
    elif len(hashes) > 16:
        out.append(_V(f"{prefix}hashes", "at most 16 hashes per item"))
    for i, h in enumerate(hashes):
        path = f"{prefix}hashes[{i}]"
        want = {1: 16, 2: 20, 3: 32, 4: 32}.get(h.algorithm)
        if want is None:
            out.append(_V(f"{path}.algorithm", "unknown or unspecified algorithm"))
            continue
        if len(h.value) != want:
            out.append(
                _V(f"{path}.value", f"must be {want} bytes for this algorithm, got {len(h.value)}")
            )
        if h.HasField("quality"):
            if h.algorithm != 4:
                out.append(_V(f"{path}.quality", "only PDQ hashes carry a quality"))
            elif h.quality > 100:
                out.append(_V(f"{path}.quality", "must be 0-100"))
    return out


MD5, SHA1, SHA256, PDQ = 1, 2, 3, 4
LENGTHS = {MD5: 16, SHA1: 20, SHA256: 32, PDQ: 32}
PAUSED = (
    "PDQ queries from this tenant are paused: its recent queries look like a probe of a listed hash"
)


def _any(msg: object) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(msg)  # type: ignore[arg-type]
    return out


def invalid_status(violations: list) -> status_pb2.Status:
    """The Status the service sends for INVALID_ARGUMENT (errors.invalid + rpc status)."""
    first = violations[0]
    message = f"invalid field {first.field}: {first.description}" + (
        f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
    )
    bad = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in violations[:100]
        ]
    )
    info = error_details_pb2.ErrorInfo(reason="ERROR_REASON_INVALID_FIELD", domain="hashmatch.v1")
    return status_pb2.Status(
        code=code_pb2.INVALID_ARGUMENT, message=message, details=[_any(info), _any(bad)]
    )


def paused_status(retry_after_ms: int) -> status_pb2.Status:
    info = error_details_pb2.ErrorInfo(reason="ERROR_REASON_RATE_LIMITED", domain="hashmatch.v1")
    delay = duration_pb2.Duration()
    delay.FromMilliseconds(retry_after_ms)
    retry = error_details_pb2.RetryInfo(retry_delay=delay)
    return status_pb2.Status(
        code=code_pb2.RESOURCE_EXHAUSTED, message=PAUSED, details=[_any(info), _any(retry)]
    )


def pack(hashes: list[tuple[int, bytes]]) -> tuple[bytes, bytes]:
    algs = bytes(a for a, _ in hashes)
    slots = b"".join(d.ljust(32, b"\0") for _, d in hashes)
    return algs, slots


def load(
    index: Index,
    list_id: int,
    entries: list[tuple[int, bytes, str]],
    first_id: int = 0,
    version: int | None = None,
) -> None:
    algs, slots = pack([(a, d) for a, d, _ in entries])
    ids = b"".join(struct.pack("<Q", first_id + i) for i in range(len(entries)))
    refs = bytearray()
    ends = bytearray()
    for _, _, r in entries:
        refs += r.encode()
        ends += struct.pack("<I", len(refs))
    index.apply(list_id, algs, slots, ids, b"", b"", bytes(ends), bytes(refs), version)


def flip(value: bytes, n: int, rng: random.Random) -> bytes:
    x = int.from_bytes(value, "big")
    for bit in rng.sample(range(256), n):
        x ^= 1 << bit
    return x.to_bytes(32, "big")


def pdq_value(rng: random.Random) -> bytes:
    while True:
        v = rng.randbytes(32)
        if not is_degenerate_pdq(v):
            return v


def request(
    hashes: list[tuple[int, bytes, int | None]], item_id: str = ""
) -> match_pb2.MatchRequest:
    return match_pb2.MatchRequest(
        item_id=item_id,
        hashes=[hashes_pb2.Hash(algorithm=a, value=v, quality=q) for a, v, q in hashes],
    )


def batch_of(items: list[match_pb2.MatchRequest]) -> bytes:
    return match_pb2.MatchBatchRequest(items=items).SerializeToString()


def results(raw: bytes) -> list[match_pb2.MatchResponse]:
    return list(match_pb2.MatchBatchResponse.FromString(raw).results)


def status_of(resp: match_pb2.MatchResponse) -> status_pb2.Status:
    assert resp.HasField("error")
    return resp.error


# -- oracle --------------------------------------------------------------------------------


def hamming(a: bytes, b: bytes) -> int:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).bit_count()


def oracle(
    lists: dict[int, dict[str, Any]],
    items: list[list[tuple[int, bytes, int | None]]],
    subscribed: set[int] | None,
    allow: list[tuple[int, bytes]],
) -> list[list[tuple[str, str, int]]]:
    out = []
    for hashes in items:
        refs: list[tuple[str, str, int]] = []
        seen = set()
        for alg, value, quality in hashes:
            if alg == PDQ and is_degenerate_pdq(value):
                continue
            if any(
                a == alg and (hamming(v, value) <= 31 if alg == PDQ else v == value)
                for a, v in allow
            ):
                continue
            for lid in sorted(lists):
                if subscribed is not None and lid not in subscribed:
                    continue
                spec = lists[lid]
                for entry_alg, digest, ref in spec["entries"]:  # in entry id order
                    if entry_alg != alg:
                        continue
                    if alg == PDQ:
                        if quality is not None and quality < spec["min_quality"]:
                            continue
                        hit = hamming(digest, value) <= spec["threshold"]
                    else:
                        hit = digest == value
                    if hit and ref not in spec["quarantined"] and (lid, ref) not in seen:
                        seen.add((lid, ref))
                        refs.append((spec["name"], ref, spec["version"]))
        out.append(refs)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_batch_answers_as_the_oracle(seed: int) -> None:
    rng = random.Random(seed)
    index = Index()
    md5s = [rng.randbytes(16) for _ in range(6)]
    pdqs = [pdq_value(rng) for _ in range(4)]
    lists: dict[int, dict[str, Any]] = {}
    for lid in (3, 7, 9):
        spec: dict[str, Any] = {
            "name": f"list-{lid}",
            "threshold": rng.choice([10, 31, 40]),
            "min_quality": rng.choice([0, 50]),
            "version": rng.randrange(1, 100),
            "quarantined": set(),
        }
        entries = []
        used = set()
        for _ in range(rng.randrange(3, 12)):
            if rng.random() < 0.5:
                key = (MD5, rng.choice(md5s))
            else:
                key = (PDQ, flip(rng.choice(pdqs), rng.randrange(0, 45), rng))
            if key in used:
                continue
            used.add(key)
            entries.append((key[0], key[1], f"R{rng.randrange(8)}-é"))
        spec["entries"] = entries
        if rng.random() < 0.5 and entries:
            spec["quarantined"] = {entries[0][2]}
        lists[lid] = spec
        index.configure_list(lid, spec["threshold"], spec["min_quality"], spec["name"])
        half = len(entries) // 2
        load(index, lid, entries[:half], 0)
        load(index, lid, entries[half:], half, version=spec["version"])
        index.set_list_state(lid, spec["version"], sorted(spec["quarantined"]))
    items = []
    for _ in range(40):
        hashes: list[tuple[int, bytes, int | None]] = []
        for _ in range(rng.randrange(1, 4)):
            if rng.random() < 0.4:
                hashes.append((MD5, rng.choice([*md5s, rng.randbytes(16)]), None))
            else:
                base = rng.choice(pdqs)
                hashes.append(
                    (PDQ, flip(base, rng.randrange(0, 45), rng), rng.choice([None, 30, 80]))
                )
        items.append(hashes)
    subscribed = {3, 9} if seed % 2 else None
    allow = [(MD5, md5s[0]), (PDQ, pdqs[1])] if seed % 3 == 0 else []
    allow_algs, allow_slots = pack(allow)
    index.set_policy("p", subscribed is None, sorted(subscribed or []), allow_algs, allow_slots)
    want = oracle(lists, items, subscribed, allow)
    assert sum(map(len, want)) > 0, "the corpus must match something"
    raw = batch_of([request(h, f"item-{i}") for i, h in enumerate(items)])
    verdicts = index.match_request(raw, True, "p")
    assert verdicts.violations == []
    assert verdicts.items == len(items)
    assert verdicts.has_pdq
    encoded = verdicts.encode()
    got = results(encoded)
    assert len(got) == len(items)
    # Byte for byte what the protobuf runtime writes.
    assert match_pb2.MatchBatchResponse(results=got).SerializeToString() == encoded
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g.item_id == f"item-{i}"
        assert [(r.list, r.reference_id, r.list_version) for r in g.references] == w
        assert g.verdict == (match_pb2.VERDICT_MATCH if w else match_pb2.VERDICT_NO_MATCH)
        assert not g.HasField("error")
    # Counts: one per answered (item, list, reference).
    counts = index.take_counts()
    assert sum(c[3] for c in counts) == sum(map(len, want))
    by_ref: dict[tuple[str, int, str], int] = {}
    for refs in want:
        for name, ref, _ in refs:
            count_key = ("p", int(name.removeprefix("list-")), ref)
            by_ref[count_key] = by_ref.get(count_key, 0) + 1
    assert {(t, lid, r): n for t, lid, r, n, _ in counts} == by_ref
    assert all(abs(last - time.time()) < 60 for *_, last in counts)
    # PDQ queries: served iff the hash alone is answered something.
    queries = verdicts.pdq_queries()
    searched = [
        (i, v)
        for i, h in enumerate(items)
        for a, v, _ in h
        if a == PDQ and not is_degenerate_pdq(v)
    ]
    assert [(i, v) for i, v, _ in queries] == searched
    for i, value, served in queries:
        quality = next(q for a, v, q in items[i] if a == PDQ and v == value)
        alone = oracle(lists, [[(PDQ, value, quality)]], subscribed, allow)[0]
        assert served == bool(alone)


# -- validation ----------------------------------------------------------------------------


BAD_ITEMS = [
    request([(MD5, b"x" * 16, None)], "a" * 257),
    request([(MD5, b"x" * 16, None)], "tab\there"),
    request([], "none"),
    request([(MD5, b"x" * 16, None)] * 17, "many"),
    request([(0, b"x" * 16, None), (9, b"", None)], "alg"),
    request([(SHA1, b"x" * 16, 5)], "len+quality"),
    request([(PDQ, b"x" * 32, 101)], "pdq quality"),
    request([(SHA256, b"", None), (MD5, b"y" * 17, None)], ""),
]


@pytest.mark.parametrize("msg", BAD_ITEMS)
def test_single_request_violations_are_the_services(msg: match_pb2.MatchRequest) -> None:
    expected = expected_violations(msg.item_id, msg.hashes)
    assert expected
    verdicts = Index().match_request(msg.SerializeToString(), False, "p")
    assert verdicts.violations == [(v.field, v.description) for v in expected]
    assert verdicts.items == 1
    resp = match_pb2.MatchResponse.FromString(verdicts.encode())
    assert resp.item_id == msg.item_id
    assert resp.error == invalid_status(expected)


def test_batch_item_violations_and_whole_call() -> None:
    index = Index()
    good = request([(MD5, b"g" * 16, None)], "good")
    items = [good, *BAD_ITEMS]
    verdicts = index.match_request(batch_of(items), True, "p")
    assert verdicts.violations == []
    got = results(verdicts.encode())
    assert got[0] == match_pb2.MatchResponse(item_id="good", verdict=match_pb2.VERDICT_NO_MATCH)
    for i, msg in enumerate(items[1:], start=1):
        expected = expected_violations(msg.item_id, msg.hashes, f"items[{i}].")
        assert got[i] == match_pb2.MatchResponse(
            item_id=msg.item_id, error=invalid_status(expected)
        )
    assert index.match_request(b"", True, "p").violations == [
        ("items", "at least one item is required")
    ]
    many = batch_of([good] * 10_001)
    assert index.match_request(many, True, "p").violations == [
        ("items", "at most 10000 items, got 10001")
    ]
    not_proto = [("(request)", "the request is not a valid protobuf message")]
    assert index.match_request(b"\x0a\x05ab", True, "p").violations == not_proto
    single = index.match_request(b"\xff\xff", False, "p")
    assert single.violations == not_proto
    resp = match_pb2.MatchResponse.FromString(single.encode())
    assert (
        resp.error.message == "invalid field (request): the request is not a valid protobuf message"
    )


def test_bad_utf8_and_unknown_fields() -> None:
    raw = b"\x0a\x02\xc3\x28" + request([(MD5, b"m" * 16, None)]).SerializeToString()
    verdicts = Index().match_request(raw, False, "p")
    assert verdicts.violations == [("item_id", "is not valid UTF-8")]
    # In a batch only that item is refused.
    good = request([(MD5, b"m" * 16, None)], "ok").SerializeToString()
    body = b"\x0a" + bytes([len(raw)]) + raw + b"\x0a" + bytes([len(good)]) + good
    got = results(Index().match_request(body, True, "p").encode())
    assert got[0].error.message == "invalid field items[0].item_id: is not valid UTF-8"
    assert got[1].verdict == match_pb2.VERDICT_NO_MATCH
    # Unknown fields of every wire type, groups included, are skipped as protobuf does.
    extra = b"\x18\x07" + b"\x21" + bytes(8) + b"\x2b\x08\x01\x33\x34\x2c" + b"\x3d" + bytes(4)
    msg = request([(MD5, b"m" * 16, None)], "x")
    raw = msg.SerializeToString() + extra
    assert match_pb2.MatchRequest.FromString(raw).item_id == "x"
    index = Index()
    index.configure_list(1, 31, 50, "l")
    load(index, 1, [(MD5, b"m" * 16, "R")])
    resp = match_pb2.MatchResponse.FromString(index.match_request(raw, False, "p").encode())
    assert [r.reference_id for r in resp.references] == ["R"]


# -- refusal -------------------------------------------------------------------------------


def test_refusal_and_pause_encoding() -> None:
    rng = random.Random(5)
    index = Index()
    index.configure_list(1, 31, 0, "l")
    pdq = pdq_value(rng)
    md5 = rng.randbytes(16)
    near = flip(pdq, 3, rng)
    load(index, 1, [(PDQ, pdq, "P"), (MD5, md5, "M")], version=4)
    items = [
        request([(PDQ, pdq, 90)], "0"),
        request([(MD5, md5, None)], "1"),
        request([(PDQ, near, None), (MD5, md5, None)], "2"),
        request([(MD5, b"z" * 16, None)], "3"),
    ]
    raw = batch_of(items)
    expected_error = paused_status(2500)
    verdicts = index.match_request(raw, True, "p")
    assert verdicts.pdq_queries() == [(0, pdq, True), (2, near, True)]
    encoded = verdicts.encode(refuse_from=1, retry_after_ms=2500)
    got = results(encoded)
    assert match_pb2.MatchBatchResponse(results=got).SerializeToString() == encoded
    assert [r.reference_id for r in got[0].references] == ["P"]
    assert got[1].references[0].reference_id == "M"
    assert got[2] == match_pb2.MatchResponse(item_id="2", error=expected_error)
    assert got[3].verdict == match_pb2.VERDICT_NO_MATCH
    retry = error_details_pb2.RetryInfo()
    assert got[2].error.details[1].Unpack(retry)
    assert retry.retry_delay.ToMilliseconds() == 2500
    counts = index.take_counts()
    assert sorted((r, n) for _, _, r, n, _ in counts) == [("M", 1), ("P", 1)], (
        "refused: not counted"
    )
    # Paused: PDQ never searched, every PDQ-bearing item refused, the others answered.
    paused = index.match_request(raw, True, "p", pdq_paused=True)
    assert paused.pdq_queries() == []
    assert paused.has_pdq
    got = results(paused.encode(retry_after_ms=2500))
    assert [r.HasField("error") for r in got] == [True, False, True, False]
    assert got[0] == match_pb2.MatchResponse(item_id="0", error=expected_error)
    # Single request, paused.
    one = index.match_request(items[0].SerializeToString(), False, "p", pdq_paused=True)
    resp = match_pb2.MatchResponse.FromString(one.encode(retry_after_ms=2500))
    assert resp == match_pb2.MatchResponse(item_id="0", error=expected_error)


def test_state_policy_and_reference_columns() -> None:
    index = Index()
    index.configure_list(1, 31, 50, "first")
    index.configure_list(2, 31, 50)  # old 3-arg form: unnamed
    md5 = b"q" * 16
    load(index, 1, [(MD5, md5, "A")], version=11)
    load(index, 2, [(MD5, md5, "B")])
    raw = request([(MD5, md5, None)], "it").SerializeToString()

    def refs(tenant: str = "p") -> list[tuple[str, str, int]]:
        resp = match_pb2.MatchResponse.FromString(index.match_request(raw, False, tenant).encode())
        return [(r.list, r.reference_id, r.list_version) for r in resp.references]

    assert refs() == [("first", "A", 11), ("", "B", 0)]
    index.set_list_state(2, 3, ["B"])
    assert refs() == [("first", "A", 11)]
    index.set_list_state(2, 3, [])
    index.set_policy("p", False, [2], b"", b"")
    assert refs() == [("", "B", 3)]
    assert refs("other") == [("first", "A", 11), ("", "B", 3)]
    algs, slots = pack([(MD5, md5)])
    index.set_policy("p", True, [], algs, slots)
    assert refs() == []
    index.remove_policy("p")
    assert len(refs()) == 2
    with pytest.raises(ValueError):
        index.apply(1, algs, slots, bytes(8), b"", b"", struct.pack("<II", 1, 2), b"ab")
    with pytest.raises(ValueError):
        index.apply(1, algs, slots, bytes(8), b"", b"", struct.pack("<I", 2), b"\xff\xfe")
    with pytest.raises(ValueError):
        index.set_list_state(99, 1, [])
    assert index.reference_bytes(1) > 0
