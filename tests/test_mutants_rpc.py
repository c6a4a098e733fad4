"""The serving pipeline's parts one at a time: rpc/limits.py's token buckets, admission
and load shedding with their clocks, rpc/status.py's refusal table, rpc/observers.py's
log line and metrics (written for the mutants the end-to-end tests let live;
benchmarks/mutation)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from prometheus_client import CollectorRegistry

from hashmatch.server import errors
from hashmatch.server.logs import BufferedStreamHandler, JsonFormatter, direct_json_handler
from hashmatch.server.metrics import Metrics
from hashmatch.server.rpc import limits, status
from hashmatch.server.rpc.limits import Admission, LoadShedder, RateLimiter, rate_limited
from hashmatch.server.rpc.observers import RpcLog, RpcMetrics
from hashmatch.server.rpc.pipeline import Call
from hashmatch.server.settings import Settings, TenantLimit
from hashmatch.v1 import hashes_pb2


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- rpc/limits.py: RateLimiter -------------------------------------------------------------


def test_rate_limited_names_the_tenant_and_the_wait() -> None:
    refusal = rate_limited("acme", 0.25)
    assert isinstance(refusal, errors.RateLimited)
    assert refusal.message == "rate limit of tenant acme exceeded; retry after 0.250 s"
    assert refusal.retry_after == 0.25


def limiter(rate: float, burst: float, clock: Clock) -> RateLimiter:
    return RateLimiter(lambda _: TenantLimit(rate=rate, burst=burst), clock=clock)


def test_a_bucket_starts_full_and_refills_at_its_rate_up_to_its_burst() -> None:
    clock = Clock()
    bucket = limiter(rate=4.0, burst=8.0, clock=clock)
    assert bucket.try_acquire("a", 8) is None  # full at first
    assert bucket.try_acquire("a", 1) == 0.25  # empty: one token comes in 1/4 s
    clock.now += 0.5
    assert bucket.try_acquire("a", 2) is None  # two tokens came back
    assert bucket.try_acquire("a", 1) == 0.25
    clock.now += 100.0  # refills no further than the burst
    assert bucket.try_acquire("a", 8) is None
    assert bucket.try_acquire("a", 2) == 0.5


def test_the_wait_is_what_is_missing_at_the_rate() -> None:
    clock = Clock()
    bucket = limiter(rate=2.0, burst=10.0, clock=clock)
    assert bucket.try_acquire("a", 7) is None  # 3 left
    assert bucket.try_acquire("a", 5) == 1.0  # 2 missing at 2 a second
    assert bucket.try_acquire("a", 3) is None  # exactly what is left
    assert bucket.try_acquire("a", 1) == 0.5


def test_the_wait_is_never_below_a_millisecond() -> None:
    clock = Clock()
    bucket = limiter(rate=1e9, burst=1.0, clock=clock)
    assert bucket.try_acquire("a", 1) is None
    assert bucket.try_acquire("a", 1) == 0.001


def test_a_call_larger_than_the_burst_passes_a_full_bucket_and_leaves_it_in_debt() -> None:
    clock = Clock()
    bucket = limiter(rate=1.0, burst=10.0, clock=clock)
    assert bucket.try_acquire("a", 30) is None  # larger than the bucket: let through
    # 20 tokens in debt, and the next call needs 1: 21 s.
    assert bucket.try_acquire("a", 1) == 21.0
    clock.now += 21.0
    assert bucket.try_acquire("a", 1) is None
    # Not full: a large call waits until the bucket is (10 tokens at 1 a second).
    assert bucket.try_acquire("a", 30) == 10.0


def test_buckets_are_per_tenant_and_the_limit_is_asked_once() -> None:
    asked: list[str] = []

    def limit_for(tenant: str) -> TenantLimit | None:
        asked.append(tenant)
        return None if tenant == "free" else TenantLimit(rate=1.0, burst=1.0)

    clock = Clock()
    bucket = RateLimiter(limit_for, clock=clock)
    assert bucket.try_acquire("a") is None
    assert bucket.try_acquire("b") is None  # its own bucket
    assert bucket.try_acquire("a") == 1.0
    for _ in range(3):
        assert bucket.try_acquire("free", 10**9) is None
    assert asked == ["a", "b", "free"]


def test_acquire_raises_with_the_wait_and_takes_one_by_default() -> None:
    clock = Clock()
    bucket = limiter(rate=2.0, burst=2.0, clock=clock)
    bucket.acquire("acme")
    bucket.acquire("acme")
    with pytest.raises(errors.RateLimited) as info:
        bucket.acquire("acme")
    assert info.value.retry_after == 0.5
    assert info.value.message == "rate limit of tenant acme exceeded; retry after 0.500 s"
    clock.now += 0.5
    bucket.acquire("acme", 1)
    with pytest.raises(errors.RateLimited):
        bucket.acquire("acme", 1)
    clock.now += 1.5  # 2 tokens back, then 3 taken at once: 1 in debt
    bucket.acquire("acme", 3)
    assert bucket.try_acquire("acme", 1) == 1.0


def test_a_debit_puts_the_bucket_in_debt_and_nothing_else_does() -> None:
    clock = Clock()
    bucket = limiter(rate=1.0, burst=5.0, clock=clock)
    bucket.debit("a", 3)  # no bucket yet: nothing to charge
    assert bucket.try_acquire("a", 1) is None  # created full: 4 left
    bucket.debit("a", 0)
    bucket.debit("a", -7)  # never a credit
    bucket.debit("a", 6)  # 2 in debt
    assert bucket.try_acquire("a", 1) == 3.0
    clock.now += 3.0  # 1 token again
    bucket.debit("a", 1)  # and a debit of one takes it
    assert bucket.try_acquire("a", 1) == 1.0
    bucket.debit("other", 5)  # another tenant's bucket is untouched
    assert bucket.try_acquire("other", 5) is None


def test_from_settings_limits_by_the_settings() -> None:
    clock_free = RateLimiter.from_settings(Settings(rate_limit=0.0))
    assert clock_free.try_acquire("a", 10**9) is None
    limited = RateLimiter.from_settings(
        Settings(rate_limit=1.0, rate_burst=2.0, tenants={"x": TenantLimit(0.0, 0.0)})
    )
    assert limited.try_acquire("a", 2) is None
    wait = limited.try_acquire("a", 1)
    assert wait is not None and 0.9 < wait <= 1.0
    assert limited.try_acquire("x", 10**9) is None  # rate 0: not limited


# --- rpc/limits.py: Admission ---------------------------------------------------------------


def test_admission_bounds_and_their_messages() -> None:
    admission = Admission(max_calls=5, tenant_share=0.5, max_streams=2, max_tenant_streams=1)
    assert admission.max_tenant_calls == 2  # floor(2.5)
    admission.enter("a", stream=False)
    admission.enter("a", stream=False)
    with pytest.raises(errors.Overloaded) as info:
        admission.enter("a", stream=False)
    assert info.value.message == (
        "tenant a already has 2 calls in progress on this server (its limit); retry when one ends"
    )
    assert info.value.retry_after == limits.OVERLOAD_RETRY_AFTER == 0.05
    admission.enter("b", stream=False)
    admission.enter("b", stream=False)
    admission.enter("c", stream=False)
    assert admission.calls == 5
    with pytest.raises(errors.Overloaded) as info:
        admission.enter("d", stream=False)
    assert info.value.message == "the server has 5 calls in progress (its limit); retry shortly"
    assert info.value.retry_after == 0.05
    # Streams are counted apart from calls.
    admission.enter("a", stream=True)
    with pytest.raises(errors.Overloaded) as info:
        admission.enter("a", stream=True)
    assert info.value.message == (
        "tenant a already has 1 streams in progress on this server (its limit); retry when one ends"
    )
    admission.enter("b", stream=True)
    with pytest.raises(errors.Overloaded) as info:
        admission.enter("c", stream=True)
    assert info.value.message == "the server has 2 streams in progress (its limit); retry shortly"
    assert (admission.calls, admission.streams) == (5, 2)


def test_a_tenant_share_is_at_least_one_call() -> None:
    admission = Admission(max_calls=3, tenant_share=0.1, max_streams=1, max_tenant_streams=1)
    assert admission.max_tenant_calls == 1
    admission.enter("a", stream=False)
    with pytest.raises(errors.Overloaded):
        admission.enter("a", stream=False)


def test_leaving_frees_exactly_one_slot() -> None:
    admission = Admission(max_calls=4, tenant_share=1.0, max_streams=4, max_tenant_streams=2)
    for _ in range(2):
        admission.enter("a", stream=False)
        admission.enter("a", stream=True)
    admission.leave("a", stream=False)
    assert (admission.calls, admission.streams) == (1, 2)
    admission.enter("a", stream=False)  # the slot it left
    with pytest.raises(errors.Overloaded):
        admission.enter("a", stream=True)  # streams are not freed by a call leaving
    admission.leave("a", stream=True)
    admission.leave("a", stream=True)
    admission.leave("a", stream=False)
    admission.leave("a", stream=False)
    assert (admission.calls, admission.streams) == (0, 0)
    # Nothing left held: a tenant is forgotten once it holds nothing.
    assert admission._calls == {} and admission._streams == {}
    for _ in range(2):
        admission.enter("a", stream=True)


def test_admission_from_settings() -> None:
    admission = Admission.from_settings(
        Settings(max_concurrent_rpcs=10, tenant_share=0.3, max_streams=7, max_tenant_streams=3)
    )
    assert (admission.max_calls, admission.max_tenant_calls) == (10, 3)
    assert (admission.max_streams, admission.max_tenant_streams) == (7, 3)
    assert (admission.calls, admission.streams) == (0, 0)


# --- rpc/limits.py: LoadShedder -------------------------------------------------------------


def test_shedding_needs_lag_enough_calls_and_a_heavy_tenant() -> None:
    clock = Clock(100.0)
    shedder = LoadShedder(clock=clock)
    assert (shedder.until, shedder.lag) == (0.0, 0.0)
    shedder.until = 100.5
    for _ in range(limits.SHED_MIN_CALLS - 1):
        shedder.admit("heavy")  # lagging, but fewer calls than SHED_MIN_CALLS
    with pytest.raises(errors.Overloaded) as info:
        shedder.admit("heavy")  # the 200th call of the second
    assert info.value.message == "the server is overloaded; retry shortly"
    assert info.value.retry_after == limits.SHED_RETRY_AFTER == 0.1
    shedder.admit("light")  # 1 call of 201, two tenants: below its even share


def test_a_tenant_at_exactly_its_even_share_is_shed() -> None:
    clock = Clock(100.0)
    shedder = LoadShedder(clock=clock)
    for _ in range(limits.SHED_MIN_CALLS // 2 - 1):
        shedder.admit("a")
        shedder.admit("b")
    shedder.admit("a")
    shedder.until = 101.0
    # b's call is its 100th of 200 with two tenants: exactly its share.
    with pytest.raises(errors.Overloaded):
        shedder.admit("b")


def test_shedding_ends_at_until_and_counts_restart_each_second() -> None:
    clock = Clock(100.0)
    shedder = LoadShedder(clock=clock)
    for _ in range(limits.SHED_MIN_CALLS):
        shedder.admit("heavy")
    shedder.until = 100.0  # ended just now
    shedder.admit("heavy")
    shedder.until = 100.5
    with pytest.raises(errors.Overloaded):
        shedder.admit("heavy")
    clock.now = 101.2  # a new second: its calls are counted afresh
    shedder.until = 102.0
    shedder.admit("heavy")
    assert (shedder._total, shedder._calls) == (1, {"heavy": 1})


class StepClock:
    """Each reading is the previous one plus the next step (the loop's measured sleeps)."""

    def __init__(self, steps: list[float]) -> None:
        self.now = 0.0
        self.steps = iter(steps)
        self.readings = 0

    def __call__(self) -> float:
        self.readings += 1
        self.now += next(self.steps, 0.0)
        return self.now


async def _watch(shedder: LoadShedder, probes: int) -> None:
    task = asyncio.get_running_loop().create_task(shedder.watch())
    while shedder.clock.readings < probes:  # type: ignore[attr-defined]
        await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_three_late_probes_in_a_row_shed_for_the_hold() -> None:
    # Readings go in pairs (before and after a probe's sleep), then one more when shedding.
    steps = [0.0, 0.11, 0.0, 0.11, 0.0, 0.11, 0.0]
    clock = StepClock(steps)
    shedder = LoadShedder(clock=clock)
    asyncio.run(_watch(shedder, 7))
    assert shedder.lag == pytest.approx(0.1)
    assert shedder.until == pytest.approx(0.33 + limits.SHED_HOLD)


def test_late_probes_not_in_a_row_do_not_shed() -> None:
    # late, late, on time, late, late: never three in a row.
    steps = [0.0, 0.11, 0.0, 0.11, 0.0, 0.02, 0.0, 0.11, 0.0, 0.11, 0.0, 0.02]
    clock = StepClock(steps)
    shedder = LoadShedder(clock=clock)
    asyncio.run(_watch(shedder, 12))
    assert shedder.until == 0.0
    assert shedder.lag == pytest.approx(0.01)


class ListClock:
    """Readings taken from a list, then 0.0 (a probe that is never late)."""

    def __init__(self, readings: list[float]) -> None:
        self.values = iter(readings)
        self.readings = 0

    def __call__(self) -> float:
        self.readings += 1
        return next(self.values, 0.0)


def test_a_lag_of_exactly_the_limit_is_not_late() -> None:
    assert 0.04 - 0.0 - limits.LAG_PROBE == limits.LAG_LIMIT
    clock = ListClock([0.0, 0.04] * 3)
    shedder = LoadShedder(clock=clock)
    asyncio.run(_watch(shedder, 6))
    assert shedder.lag == limits.LAG_LIMIT
    assert shedder.until == 0.0


def test_a_clock_in_its_first_second_counts_from_nothing() -> None:
    # The counts start empty for second 0 (a monotonic clock can be there after a boot).
    clock = Clock(0.5)
    shedder = LoadShedder(clock=clock)
    shedder.until = 0.9
    for _ in range(limits.SHED_MIN_CALLS - 1):
        shedder.admit("heavy")  # 199 calls: not enough to shed
    assert (shedder._total, shedder._calls) == (199, {"heavy": 199})
    with pytest.raises(errors.Overloaded):
        shedder.admit("heavy")


def test_the_lag_thresholds() -> None:
    assert (limits.LAG_LIMIT, limits.LAG_STREAK, limits.LAG_PROBE) == (0.03, 3, 0.01)
    assert (limits.SHED_HOLD, limits.SHED_MIN_CALLS) == (0.25, 200)


# --- rpc/status.py --------------------------------------------------------------------------


@pytest.mark.parametrize(("cls", "row"), list(status.TABLE.items()))
def test_every_refusal_maps_to_its_row(
    cls: type[errors.Refusal], row: tuple[grpc.StatusCode, int]
) -> None:
    assert status.code_and_reason(cls("m")) == row


def test_a_subclass_of_a_refusal_takes_its_row_and_an_unknown_one_is_an_error() -> None:
    class Sub(errors.StaleVersion):
        pass

    assert status.code_and_reason(Sub("m")) == status.TABLE[errors.StaleVersion]

    class Unlisted(errors.Refusal):
        pass

    with pytest.raises(LookupError) as info:
        status.code_and_reason(Unlisted("m"))
    assert str(info.value) == "no status for Unlisted; add it to rpc/status.py"


def _details(found: status_pb2.Status) -> list[str]:
    return [d.type_url.rsplit("/", 1)[1] for d in found.details]


def test_a_plain_refusal_carries_its_code_message_and_error_info_only() -> None:
    found = status.to_status(errors.ListNotFound("no such list"))
    assert found.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert found.message == "no such list"
    assert _details(found) == ["google.rpc.ErrorInfo"]
    info = error_details_pb2.ErrorInfo()
    assert found.details[0].Unpack(info)
    assert (info.reason, info.domain) == ("ERROR_REASON_LIST_NOT_FOUND", "hashmatch.v1")
    assert status.DOMAIN == "hashmatch.v1"
    assert hashes_pb2.ErrorReason.Value(info.reason) == hashes_pb2.ERROR_REASON_LIST_NOT_FOUND


def test_violations_and_retry_info_follow_the_error_info() -> None:
    refusal = errors.InvalidArgument(
        "bad",
        [errors.Violation("a", "is wrong"), errors.Violation("b.c", "too long")],
        retry_after=1.2345,
    )
    found = status.to_status(refusal)
    assert _details(found) == [
        "google.rpc.ErrorInfo",
        "google.rpc.BadRequest",
        "google.rpc.RetryInfo",
    ]
    bad = error_details_pb2.BadRequest()
    assert found.details[1].Unpack(bad)
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("a", "is wrong"),
        ("b.c", "too long"),
    ]
    retry = error_details_pb2.RetryInfo()
    assert found.details[2].Unpack(retry)
    assert retry.retry_delay.ToMilliseconds() == 1234


def test_a_retry_after_of_zero_is_still_said() -> None:
    found = status.to_status(errors.Overloaded("busy", retry_after=0.0))
    assert _details(found) == ["google.rpc.ErrorInfo", "google.rpc.RetryInfo"]
    retry = error_details_pb2.RetryInfo()
    assert found.details[1].Unpack(retry)
    assert retry.retry_delay.ToMilliseconds() == 0


# --- rpc/observers.py -----------------------------------------------------------------------


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    log = logging.getLogger("hashmatch.test.rpc")
    log.propagate = False
    log.setLevel(logging.INFO)
    yield log
    log.handlers.clear()


def a_call(**kw: object) -> Call:
    fields: dict[str, object] = {
        "method": "MatchService/Match",
        "started": 0.0,
        "peer": "ipv4:127.0.0.1:5",
        "tenant": "acme",
        "items": 3,
        "code": grpc.StatusCode.NOT_FOUND,
        "duration": 0.0123456,
    }
    fields.update(kw)
    return Call(**fields)  # type: ignore[arg-type]


FIELDS = ("method", "code", "duration_ms", "tenant", "items", "peer")


def test_the_rpc_log_line_holds_the_call_fields(logger: logging.Logger) -> None:
    records = Records()
    logger.addHandler(records)
    RpcLog(logger)(a_call())
    RpcLog(logger)(a_call(tenant="", items=0, code=grpc.StatusCode.OK))
    first, second = records.records
    assert (first.levelno, first.name, first.getMessage()) == (logging.INFO, logger.name, "rpc")
    assert {k: getattr(first, k) for k in FIELDS} == {
        "method": "MatchService/Match",
        "code": "NOT_FOUND",
        "duration_ms": 12.346,
        "tenant": "acme",
        "items": 3,
        "peer": "ipv4:127.0.0.1:5",
    }
    assert [getattr(second, k) for k in ("code", "tenant", "items")] == ["OK", None, 0]


def test_quiet_calls_and_a_logger_above_info_write_nothing(logger: logging.Logger) -> None:
    records = Records()
    logger.addHandler(records)
    RpcLog(logger)(a_call(quiet=True))
    logger.setLevel(logging.WARNING)
    RpcLog(logger)(a_call())
    assert records.records == []


def test_the_default_logger_is_the_rpc_logger() -> None:
    assert RpcLog().log is logging.getLogger("hashmatch.rpc")


def direct_lines(logger: logging.Logger, *calls: Call) -> list[dict[str, object]]:
    """What RpcLog writes through the serving set-up's one JSON handler."""
    out = io.StringIO()
    handler = BufferedStreamHandler(out, interval=3600)
    handler.setFormatter(JsonFormatter())
    # The only handler (pytest attaches its capture handlers too): the direct path.
    logger.handlers = [handler]
    assert direct_json_handler(logger) is handler
    try:
        for call in calls:
            RpcLog(logger)(call)
        handler.flush()
    finally:
        handler.close()
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_the_direct_json_line_is_the_line_logging_would_write(logger: logging.Logger) -> None:
    (written,) = direct_lines(logger, a_call(tenant=""), a_call(quiet=True))
    assert {k: written[k] for k in ("level", "logger", "msg")} == {
        "level": "info",
        "logger": logger.name,
        "msg": "rpc",
    }
    assert {k: written[k] for k in FIELDS} == {
        "method": "MatchService/Match",
        "code": "NOT_FOUND",
        "duration_ms": 12.346,
        "tenant": None,
        "items": 3,
        "peer": "ipv4:127.0.0.1:5",
    }
    assert written["pid"] == os.getpid()


def test_the_direct_json_line_has_no_pid_when_logging_keeps_none(
    logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logging, "logProcesses", False)
    (written,) = direct_lines(logger, a_call())
    assert written["pid"] is None


def test_rpc_metrics_count_time_and_items_by_method() -> None:
    metrics = Metrics.create(CollectorRegistry())
    observe = RpcMetrics(metrics)
    observe(a_call(duration=0.5, items=3))
    observe(a_call(duration=0.25, items=0))
    observe(a_call(code=grpc.StatusCode.OK, items=2))
    observe(a_call(method="MatchService/MatchBatch", items=7))

    def value(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    assert value("hashmatch_rpcs_total", method="MatchService/Match", code="NOT_FOUND") == 2
    assert value("hashmatch_rpcs_total", method="MatchService/Match", code="OK") == 1
    assert value("hashmatch_rpcs_total", method="MatchService/MatchBatch", code="NOT_FOUND") == 1
    assert value("hashmatch_rpc_duration_seconds_count", method="MatchService/Match") == 3
    assert value("hashmatch_rpc_duration_seconds_sum", method="MatchService/Match") == (
        pytest.approx(0.5 + 0.25 + 0.0123456)
    )
    assert value("hashmatch_match_items_total", method="MatchService/Match") == 5
    assert value("hashmatch_match_items_total", method="MatchService/MatchBatch") == 7


def test_rpc_metrics_look_each_label_set_up_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # The cache is the point of RpcMetrics' dictionaries: a label lookup costs more than
    # the increment, so each (method, code) and method is looked up on its first call only.
    metrics = Metrics.create(CollectorRegistry())
    looked_up: list[tuple[str, ...]] = []
    for name in ("rpcs", "latency", "items"):
        metric = getattr(metrics, name)
        labels = metric.labels

        def counted(*values: str, _name: str = name, _labels: Any = labels) -> Any:
            looked_up.append((_name, *values))
            return _labels(*values)

        monkeypatch.setattr(metric, "labels", counted)
    observe = RpcMetrics(metrics)
    for _ in range(3):
        observe(a_call(items=2))
    observe(a_call(code=grpc.StatusCode.OK, items=1))
    assert looked_up == [
        ("rpcs", "MatchService/Match", "NOT_FOUND"),
        ("latency", "MatchService/Match"),
        ("items", "MatchService/Match"),
        ("rpcs", "MatchService/Match", "OK"),
    ]
    value = metrics.registry.get_sample_value
    assert value("hashmatch_match_items_total", {"method": "MatchService/Match"}) == 7
