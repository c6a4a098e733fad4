"""The bearer-token parts of rpc/auth.py one at a time, over a real store: the header
parsing, the tenant cache and its bounds, and the failed-token throttle with its clock;
and rpc/decode.py's naming of a field that is not UTF-8 (written for the mutants the
end-to-end tests let live; benchmarks/mutation)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hashmatch.server.errors import Unauthenticated
from hashmatch.server.rpc import auth
from hashmatch.server.rpc.auth import BadTokenThrottle, TenantCache, bearer_token, peer_host
from hashmatch.server.rpc.decode import Undecodable, find_bad_utf8, lenient_deserializer
from hashmatch.server.store import Role, Store
from hashmatch.v1 import lists_pb2, match_pb2


@pytest.mark.parametrize(
    ("metadata", "token"),
    [
        ([("authorization", "Bearer abc")], "abc"),
        ([("authorization", "bearer abc")], "abc"),
        ([("authorization", "BEARER  abc  ")], "abc"),
        ([("authorization", b"Bearer xyz")], "xyz"),
        ([("x-other", "Bearer no"), ("authorization", "Bearer yes")], "yes"),
        # The last authorization entry is the one used.
        ([("authorization", "Bearer first"), ("authorization", "Bearer second")], "second"),
    ],
)
def test_bearer_token_is_read(metadata: list[tuple[str, str | bytes]], token: str) -> None:
    assert bearer_token(metadata) == token


@pytest.mark.parametrize(
    "metadata",
    [
        [],
        [("x-authorization", "Bearer abc")],
        [("authorization", "Basic abc")],
        [("authorization", "Bearer")],
        [("authorization", "Bearer    ")],
        [("authorization", "Bearerabc")],
        [("authorization", "abc")],
        [("authorization", "Bearer abc"), ("authorization", "")],
    ],
)
def test_a_missing_or_malformed_bearer_token_is_refused(
    metadata: list[tuple[str, str | bytes]],
) -> None:
    with pytest.raises(Unauthenticated) as err:
        bearer_token(metadata)
    assert err.value.message == ("missing bearer token (metadata 'authorization: Bearer <token>')")


@pytest.mark.parametrize(
    ("peer", "host"),
    [
        ("ipv4:127.0.0.1:5555", "127.0.0.1"),
        ("ipv6:[::1]:5555", "[::1]"),
        ("ipv6:[2001:db8::7]:443", "[2001:db8::7]"),
        ("unix:/run/hashmatch.sock", "unix:/run/hashmatch.sock"),
        ("unknown", "unknown"),
    ],
)
def test_peer_host_leaves_the_port_out(peer: str, host: str) -> None:
    assert peer_host(peer) == host


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def test_throttle_blocks_after_the_burst_and_refills_at_its_rate() -> None:
    clock = Clock()
    throttle = BadTokenThrottle(rate=2.0, burst=3.0, clock=clock)
    assert not throttle.blocked("a")
    throttle.failed("a")
    throttle.failed("a")
    assert not throttle.blocked("a")  # one failure left
    throttle.failed("a")
    assert throttle.blocked("a")
    assert not throttle.blocked("b")  # per peer
    clock.now += 0.49  # 0.98 of a token back: still blocked
    assert throttle.blocked("a")
    clock.now += 0.01  # one whole token
    assert not throttle.blocked("a")
    throttle.failed("a")
    assert throttle.blocked("a")


def test_throttle_refill_stops_at_the_burst() -> None:
    clock = Clock()
    throttle = BadTokenThrottle(rate=1.0, burst=2.0, clock=clock)
    throttle.failed("a")
    clock.now += 1000.0  # a long quiet time refills to the burst, no further
    throttle.failed("a")
    assert not throttle.blocked("a")
    throttle.failed("a")
    assert throttle.blocked("a")


def test_throttle_defaults() -> None:
    throttle = BadTokenThrottle()
    assert (throttle.rate, throttle.burst) == (auth.BAD_TOKEN_RATE, auth.BAD_TOKEN_BURST)
    assert (auth.BAD_TOKEN_RATE, auth.BAD_TOKEN_BURST) == (10.0, 50.0)
    for _ in range(49):
        throttle.failed("a")
    assert not throttle.blocked("a")
    for _ in range(2):
        throttle.failed("a")
    assert throttle.blocked("a")


def test_throttle_forgets_the_least_recently_failing_peer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "MAX_PEERS", 2)
    clock = Clock()
    throttle = BadTokenThrottle(rate=0.0, burst=1.0, clock=clock)
    throttle.failed("a")
    throttle.failed("b")
    throttle.failed("a")  # a fails again: b is now the least recent
    throttle.failed("c")
    assert throttle.blocked("a") and throttle.blocked("c")
    assert not throttle.blocked("b")


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path)


def test_cache_answers_as_the_store_and_follows_revocation(store: Store) -> None:
    token = store.add_tenant("p", Role.PLATFORM)
    cache = TenantCache(store)
    assert cache.max_cached == auth.MAX_CACHED == 4096
    tenant = cache(token)
    assert tenant is not None and (tenant.name, tenant.role) == ("p", Role.PLATFORM)
    assert cache(token) == tenant
    assert cache("not-a-token") is None
    store.revoke_tokens("p")
    assert cache(token) is None
    assert cache(token, cached_only=True) is None


def test_cached_only_answers_only_tokens_that_authenticated_before(store: Store) -> None:
    seen = store.add_tenant("p", Role.PLATFORM)
    unseen = store.add_tenant("h", Role.HOTLINE)
    cache = TenantCache(store)
    assert cache(seen) is not None
    assert cache(unseen, cached_only=True) is None
    # A commit empties the generation; a token known before is still looked up.
    store.add_tenant("other", Role.PLATFORM)
    found = cache(seen, cached_only=True)
    assert found is not None and found.name == "p"
    assert cache(unseen) is not None  # an ordinary lookup makes it known
    assert cache(unseen, cached_only=True) is not None


def test_a_token_that_fails_is_no_longer_known(store: Store) -> None:
    token = store.add_tenant("p", Role.PLATFORM)
    cache = TenantCache(store)
    assert cache(token) is not None
    store.revoke_tokens("p")
    assert cache(token) is None
    store.issue_token("p")  # a later commit: the revoked token is not known any more
    assert cache(token, cached_only=True) is None


def test_the_cache_and_the_known_tokens_are_bounded(store: Store) -> None:
    tokens = [store.add_tenant(f"p{i}", Role.PLATFORM) for i in range(4)]
    cache = TenantCache(store, max_cached=2)
    for token in tokens:
        assert cache(token) is not None
    # Every token still authenticates (the bound is on what is kept, not on who may call).
    assert [t.name for t in map(cache, tokens) if t is not None] == ["p0", "p1", "p2", "p3"]
    # Only the two most recent stay known to a throttled peer.
    store.add_tenant("bump", Role.PLATFORM)
    cache(tokens[2])
    cache(tokens[3])
    assert cache(tokens[0], cached_only=True) is None
    assert cache(tokens[1], cached_only=True) is None
    assert cache(tokens[3], cached_only=True) is not None
    assert cache(tokens[2], cached_only=True) is not None
    # Known, not merely cached: after another commit both are still looked up.
    store.add_tenant("bump2", Role.PLATFORM)
    assert cache(tokens[3], cached_only=True) is not None
    assert cache(tokens[2], cached_only=True) is not None


def test_a_known_token_used_again_is_kept_longest(store: Store) -> None:
    tokens = [store.add_tenant(f"p{i}", Role.PLATFORM) for i in range(3)]
    cache = TenantCache(store, max_cached=2)
    cache(tokens[0])
    cache(tokens[1])
    store.add_tenant("bump", Role.PLATFORM)
    cache(tokens[0])  # p0 is the most recent again
    cache(tokens[2])  # pushes out p1, not p0
    assert cache(tokens[0], cached_only=True) is not None
    assert cache(tokens[1], cached_only=True) is None


# --- naming the field that is not UTF-8 (rpc/decode.py) ------------------------------------


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def key(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def text(number: int, value: bytes) -> bytes:
    return key(number, 2) + varint(len(value)) + value


# Unknown fields of every wire type the walk skips: varint, 64-bit, 32-bit, length-delimited.
SKIPPED = (
    key(90, 0)
    + varint(300)
    + key(91, 1)
    + bytes(range(8))
    + key(92, 5)
    + bytes(range(4))
    + text(93, b"\xff\xff")
)


def test_the_bad_string_is_named_after_fields_of_every_wire_type() -> None:
    raw = text(1, b"iwf") + SKIPPED + text(2, b"R-1") + text(2, b"R-\xff")
    descriptor = lists_pb2.ReleaseQuarantineRequest.DESCRIPTOR
    assert find_bad_utf8(descriptor, raw) == "reference_ids[1]"
    assert find_bad_utf8(descriptor, text(1, b"\xc3")) == "list"
    assert find_bad_utf8(descriptor, raw[: -len(text(2, b"R-\xff"))]) is None
    decoded = lenient_deserializer(lists_pb2.ReleaseQuarantineRequest)(raw)
    assert decoded == Undecodable("reference_ids[1]", "is not valid UTF-8")


def test_a_bad_string_inside_a_message_is_named_with_its_path() -> None:
    good = text(1, b"a") + SKIPPED
    bad = SKIPPED + text(1, b"b\x80")
    raw = text(1, good) + text(1, bad)
    assert find_bad_utf8(match_pb2.MatchBatchRequest.DESCRIPTOR, raw) == "items[1].item_id"


def test_what_is_not_protobuf_is_said_so() -> None:
    deserialize = lenient_deserializer(lists_pb2.ReleaseQuarantineRequest)
    not_protobuf = Undecodable("", "the request is not a valid protobuf message")
    # A group (wire type 3), a length past the end, a varint cut short.
    for raw in (key(1, 3) + b"\x00", text(1, b"iwf")[:-1], key(90, 0) + b"\xff"):
        assert deserialize(raw) == not_protobuf
    good = lists_pb2.ReleaseQuarantineRequest(list="iwf", reference_ids=["R-1"])
    assert deserialize(good.SerializeToString()) == good


@pytest.mark.parametrize(
    "before",
    [
        key(91, 1) + b"\x0a" * 8,  # a 64-bit field whose bytes would read as a string key
        text(93, b"a" * 200),  # a length of two varint bytes
        text(93, b"a" * 20_000),  # and of three
        key(5000, 0) + varint(2**40),  # a key of three bytes, a value of six
    ],
)
def test_the_bad_string_is_found_after_long_varints_and_fixed_fields(before: bytes) -> None:
    raw = text(1, b"iwf") + before + text(2, b"R-\xff")
    descriptor = lists_pb2.ReleaseQuarantineRequest.DESCRIPTOR
    assert find_bad_utf8(descriptor, raw) == "reference_ids[0]"
