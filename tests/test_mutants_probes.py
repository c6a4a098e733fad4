"""Probe detection (matching/probes.py) against a brute-force model of its rule, over both
ledgers (in memory, and the store's LMDB one) with two detectors sharing each, as two
worker processes do. The model keeps plain lists and compares every pair of hashes; it
shares no code with the detector (written for the mutants other tests let live)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hashmatch.server.matching.probes import Ledger, MemoryLedger, ProbeDetector, ProbePolicy
from hashmatch.server.store.probes import ProbeLedger

POLICY = ProbePolicy(radius=8, flag_after=4, window=100.0, cooldown=50.0, remembered=6)


def bits(a: bytes, b: bytes) -> int:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).bit_count()


@dataclass
class TenantModel:
    remembered: list[tuple[float, bytes]] = field(default_factory=list)  # oldest first
    near_misses: list[float] = field(default_factory=list)
    throttled_until: float = 0.0


@dataclass
class Model:
    """The rule as the module's docstring and comments state it, computed the slow way."""

    policy: ProbePolicy
    tenants: dict[str, TenantModel] = field(default_factory=dict)
    flags: list[tuple[str, int]] = field(default_factory=list)

    def throttled_for(self, tenant: str, now: float) -> float:
        until = self.tenants.get(tenant, TenantModel()).throttled_until
        return max(0.0, until - now)

    def observe_items(
        self, tenant: str, queries: list[tuple[int, bytes, bool]], now: float
    ) -> int | None:
        p = self.policy
        t = self.tenants.setdefault(tenant, TenantModel())
        live = [v for at, v in t.remembered if now - at <= p.window]
        matched: list[bytes] = []
        for _, value, hit in queries:
            if hit and value not in live and value not in matched:
                matched.append(value)
        misses = [
            item
            for item, value, hit in queries
            if not hit and any(0 < bits(value, m) <= p.radius for m in matched + live)
        ]
        if not matched and not misses:
            return None
        while t.remembered and now - t.remembered[0][0] > p.window:
            t.remembered.pop(0)
        evicted = 0
        for value in matched:
            t.remembered.append((now, value))
            if len(t.remembered) > p.remembered:
                t.remembered.pop(0)
                evicted += 1
        t.near_misses = [x for x in t.near_misses if now - x <= p.window]
        before = len(t.near_misses)
        if before + len(misses) + evicted < p.flag_after:
            t.near_misses += [now] * (len(misses) + evicted)
            return None
        self.flags.append((tenant, before + len(misses) + evicted))
        t.near_misses = []
        t.throttled_until = now + p.cooldown
        allowed = p.flag_after - before - evicted
        if allowed <= 0 or not misses:
            return queries[0][0] if queries else 0
        if allowed > len(misses):
            return None
        later = [item for item, _, _ in queries if item > misses[allowed - 1]]
        return later[0] if later else None


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def flipped(value: bytes, count: int, rng: random.Random) -> bytes:
    n = int.from_bytes(value, "big")
    for b in rng.sample(range(256), count):
        n ^= 1 << b
    return n.to_bytes(32, "big")


@pytest.fixture(params=["memory", "lmdb"])
def ledgers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Ledger]]:
    if request.param == "memory":
        shared = MemoryLedger()
        yield lambda: shared
        return
    # One per process (LMDB); worker processes each open their own on the same folder.
    ledger = ProbeLedger(tmp_path)
    yield lambda: ledger
    ledger.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_detectors_sharing_a_ledger_follow_the_model(
    ledgers: Callable[[], Ledger], seed: int
) -> None:
    rng = random.Random(seed)
    clock = Clock()
    flagged: list[tuple[str, int]] = []
    shared = [ledgers() for _ in range(2)]
    detectors = [
        ProbeDetector(POLICY, lambda t, n: flagged.append((t, n)), clock, ledger)
        for ledger in shared
    ]
    model = Model(POLICY)
    bases = [rng.randbytes(32) for _ in range(4)]
    distances = [0, 1, 2, POLICY.radius - 1, POLICY.radius, POLICY.radius + 1, 40, 128]
    for step in range(160):
        clock.now += rng.choice([0.0, 0.5, 7.0, 30.0, 99.0, 100.0, 101.0, 160.0])
        # A write of another tenant makes every detector read its view again (see
        # test_an_expired_match_is_forgotten_without_another_write for why it is needed).
        with shared[0].update("other"):
            pass
        tenant = rng.choice(["p1", "p2"])
        detector = rng.choice(detectors)
        queries = []
        for item in range(rng.randint(1, 6)):
            value = flipped(rng.choice(bases), rng.choice(distances), rng)
            queries.append((item * rng.choice([1, 3]), value, rng.random() < 0.4))
        queries.sort(key=lambda q: q[0])
        queries = list({q[0]: q for q in queries}.values())
        flags_before = len(model.flags)
        before = detector.flags
        if rng.random() < 0.2:
            matched = [v for _, v, hit in queries if hit]
            unmatched = [v for _, v, hit in queries if not hit]
            renumbered = [(i, v, True) for i, v in enumerate(matched)]
            renumbered += [(len(matched) + i, v, False) for i, v in enumerate(unmatched)]
            want_flag = len(model.flags)
            model.observe_items(tenant, renumbered, clock.now)
            assert detector.observe(tenant, matched, unmatched) is (len(model.flags) > want_flag), (
                step
            )
        else:
            want = model.observe_items(tenant, queries, clock.now)
            assert detector.observe_items(tenant, queries) == want, step
        assert detector.flags - before == len(model.flags) - flags_before, step
        assert flagged == model.flags, step
        for other in detectors:
            for name in ("p1", "p2"):
                assert other.throttled_for(name) == model.throttled_for(name, clock.now), step
    assert sum(d.flags for d in detectors) == len(model.flags)
    assert model.flags, "the walk never flagged: the sequence tests too little"


def test_throttled_for_counts_down_and_stops_at_zero() -> None:
    clock = Clock()
    detector = ProbeDetector(ProbePolicy(flag_after=1, cooldown=50.0), None, clock)
    listed = bytes(32)
    assert detector.throttled_for("p") == 0.0
    near = flipped(listed, 1, random.Random(0))
    detector.observe_items("p", [(0, listed, True), (1, near, False)])
    assert detector.throttled_for("p") == 50.0
    clock.now += 20.0
    assert detector.throttled_for("p") == 30.0
    clock.now += 31.0
    assert detector.throttled_for("p") == 0.0


def test_a_flag_reports_every_near_miss_counted() -> None:
    clock = Clock()
    calls: list[tuple[str, int]] = []
    detector = ProbeDetector(ProbePolicy(flag_after=3), lambda t, n: calls.append((t, n)), clock)
    rng = random.Random(5)
    listed = rng.randbytes(32)
    near = [flipped(listed, 1, rng) for _ in range(5)]
    queries = [(0, listed, True)] + [(i + 1, v, False) for i, v in enumerate(near)]
    # The third near-miss (item 3) fills the budget: item 4 is the first withheld.
    assert detector.observe_items("p", queries) == 4
    assert calls == [("p", 5)]
    assert detector.flags == 1


def test_an_expired_match_is_forgotten_without_another_write() -> None:
    # Found by the model test: a process's view is read again only when the ledger
    # changes, so the window must be applied when the view is used.
    clock = Clock()
    detector = ProbeDetector(ProbePolicy(flag_after=1, window=100.0), None, clock)
    rng = random.Random(7)
    listed = rng.randbytes(32)
    assert detector.observe_items("p", [(0, listed, True)]) is None
    clock.now += 50.0
    assert detector.throttled_for("p") == 0.0  # the view is read here, the match still live
    clock.now += 51.0  # the match is now 101 s old: outside the window
    # A one-bit neighbour of a forgotten match is no near-miss: nothing flags the tenant.
    detector.observe_items("p", [(0, flipped(listed, 1, rng), False)])
    assert detector.flags == 0


def test_a_ledger_keeps_only_the_hashes_it_remembers(ledgers: Callable[[], Ledger]) -> None:
    clock = Clock()
    ledger = ledgers()
    detector = ProbeDetector(
        ProbePolicy(remembered=3, flag_after=100, window=1000.0), None, clock, ledger
    )
    rng = random.Random(11)
    values = [rng.randbytes(32) for _ in range(5)]
    for value in values:
        clock.now += 1.0
        detector.observe_items("p", [(0, value, True)])
    # Two pushed out (first in, first out): the ledger holds the last three and no more.
    assert [(seq, v) for seq, _, v in ledger.remembered("p", 0)] == [
        (2, values[2]),
        (3, values[3]),
        (4, values[4]),
    ]
    assert [at for _, at, _ in ledger.remembered("p", 3)] == [clock.now - 1.0, clock.now]


def spread(value: bytes, positions: list[int]) -> bytes:
    n = int.from_bytes(value, "big")
    for b in positions:
        n ^= 1 << b
    return n.to_bytes(32, "big")


def test_a_neighbour_with_its_flips_spread_over_every_chunk_is_found() -> None:
    # radius 8: nine 29-bit chunks. Eight flips, one in each of the first eight chunks,
    # leave the ninth alone: the pigeonhole that finds every neighbour within the radius.
    clock = Clock()
    listed = random.Random(12).randbytes(32)
    # The untouched chunk is the last; then the fourth (bits 87-115), with the flip next to
    # it at bit 116, the first bit of the fifth chunk.
    for flips in ([0, 32, 64, 96, 128, 160, 192, 224], [0, 32, 64, 116, 150, 180, 210, 240]):
        detector = ProbeDetector(ProbePolicy(radius=8, flag_after=1), None, clock)
        assert detector.observe_items("p", [(0, listed, True)]) is None
        clock.now += 1.0
        detector.observe_items("p", [(0, spread(listed, flips), False)])
        assert detector.flags == 1, flips


def test_forgetting_a_match_keeps_its_neighbours_indexed() -> None:
    clock = Clock()
    detector = ProbeDetector(ProbePolicy(radius=8, flag_after=1, window=100.0), None, clock)
    a = random.Random(13).randbytes(32)
    b = spread(a, [0])  # shares eight of nine chunks with a
    detector.observe_items("p", [(0, a, True)])
    clock.now += 60.0
    detector.observe_items("p", [(0, b, True)])
    clock.now += 90.0  # a is 150 s old and forgotten, b 90 s and still remembered
    # One bit from b, in the chunk where b differs from a: found through b's other chunks.
    detector.observe_items("p", [(0, spread(b, [1]), False)])
    assert detector.flags == 1


def test_a_neighbour_whose_flips_hit_every_chunk_key_border_is_found() -> None:
    # Five flips on chunk borders (bits 29, 87, 145, 203, 232) leave chunks 0, 2, 4 and 6
    # whole: a key must be its chunk's bits only, not a bit of the next chunk.
    clock = Clock()
    detector = ProbeDetector(ProbePolicy(radius=8, flag_after=1), None, clock)
    listed = random.Random(14).randbytes(32)
    detector.observe_items("p", [(0, listed, True)])
    clock.now += 1.0
    detector.observe_items("p", [(0, spread(listed, [29, 87, 145, 203, 232]), False)])
    assert detector.flags == 1


def test_a_near_miss_exactly_one_window_old_still_counts() -> None:
    clock = Clock()
    detector = ProbeDetector(ProbePolicy(flag_after=2, window=100.0), None, clock)
    rng = random.Random(15)
    listed = rng.randbytes(32)
    detector.observe_items("p", [(0, listed, True), (1, flipped(listed, 1, rng), False)])
    assert detector.flags == 0
    clock.now += 100.0
    detector.observe_items("p", [(0, flipped(listed, 2, rng), False)])
    assert detector.flags == 1


def test_when_nothing_may_be_answered_the_first_item_of_the_call_is_named() -> None:
    clock = Clock()
    rng = random.Random(16)
    listed, other = rng.randbytes(32), rng.randbytes(32)
    detector = ProbeDetector(ProbePolicy(flag_after=1, remembered=1), None, clock)
    detector.observe_items("q", [(0, listed, True)])
    clock.now += 1.0
    # Remembering `other` pushes `listed` out while still in the window: that counts as a
    # near-miss before any of this call's own, so nothing of the call is answered, from its
    # first item (7: the items before it carried no PDQ hash) on.
    queries = [(7, other, True), (9, flipped(other, 1, rng), False)]
    assert detector.observe_items("q", queries) == 7
    assert detector.flags == 1


def test_the_lmdb_ledger_is_the_documented_folder_and_makes_it(tmp_path: Path) -> None:
    # README: state shared in DATA_DIR/probes; a data folder not made yet is made.
    data = tmp_path / "new" / "data"
    ledger = ProbeLedger(data)
    try:
        assert (data / "probes" / "data.mdb").is_file()
        assert sorted(p.name for p in data.iterdir()) == ["probes"]
    finally:
        ledger.close()
