"""The platform SDK: typed results and errors, deadlines, retries (sync and asyncio), TLS.

pytest-asyncio is not a dependency: async tests run their coroutine with asyncio.run.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from hashmatch.client import (
    MD5,
    AsyncMatchClient,
    Change,
    Connection,
    InvalidArgument,
    MatchClient,
    PermissionDenied,
    ResourceExhausted,
    RetryPolicy,
    TlsConfig,
    Unavailable,
    Verdict,
    make_hash,
)
from hashmatch.client.connection import Attempts
from hashmatch.client.errors import HashmatchError
from hashmatch.server.app import build
from hashmatch.server.settings import Settings
from hashmatch.v1 import match_pb2, match_pb2_grpc
from tests.conftest import Running, start

T = TypeVar("T")
LISTED = bytes.fromhex("d35c785545392755e7e4164457657269")


def listed(running: Running) -> None:
    with running.lists() as lists:
        lists.create_list("l")
        lists.apply_changes("l", "b1", [Change(make_hash(MD5, LISTED), "REF-1")])


@dataclass(frozen=True)
class RecordingPolicy(RetryPolicy):
    """A RetryPolicy that records each wait it decides and signals the first one."""

    waits: list[tuple[int, float | None]] = field(default_factory=list)
    first_wait: threading.Event = field(default_factory=threading.Event)

    def delay(self, attempt: int, hint: float | None) -> float:
        self.waits.append((attempt, hint))
        self.first_wait.set()
        return super().delay(attempt, hint)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- retry policy and deadlines, without a network ---


def test_backoff_is_jittered_exponential_and_honours_retry_info() -> None:
    policy = RetryPolicy(initial_backoff=0.1, max_backoff=1.0)
    for attempt in range(8):
        assert 0 <= policy.delay(attempt, None) <= min(1.0, 0.1 * 2**attempt)
    # The server's RetryInfo delay is waited in full (never capped by max_backoff).
    assert 3.0 <= policy.delay(0, 3.0) <= 3.3
    assert policy.retryable(ResourceExhausted("slow down", retry_delay=3.0))
    assert not policy.retryable(ResourceExhausted("come back tomorrow", retry_delay=86400))
    assert not policy.retryable(InvalidArgument("bad"))


class FakeRpcError(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "down"

    def trailing_metadata(self) -> None:
        return None

    def __getattr__(self, name: str) -> Any:  # the rest of grpc.Call is not used
        raise AttributeError(name)


def test_attempts_stop_at_the_deadline_and_at_the_attempt_limit() -> None:
    now = [0.0]
    attempts = Attempts(RetryPolicy(attempts=100), timeout=1.0, clock=lambda: now[0])
    assert attempts.remaining() == 1.0
    waited = 0
    with pytest.raises(Unavailable):
        while True:
            now[0] += attempts.failed(FakeRpcError(grpc.StatusCode.UNAVAILABLE))
            waited += 1
    assert now[0] < 1.0 and waited < 99  # gave up because the next wait would pass 1 s
    limited = Attempts(RetryPolicy(attempts=3, initial_backoff=0), timeout=None)
    limited.failed(FakeRpcError(grpc.StatusCode.UNAVAILABLE))
    limited.failed(FakeRpcError(grpc.StatusCode.UNAVAILABLE))
    with pytest.raises(Unavailable):
        limited.failed(FakeRpcError(grpc.StatusCode.UNAVAILABLE))
    with pytest.raises(PermissionDenied):  # not retryable: the first failure is final
        Attempts(RetryPolicy(), None).failed(FakeRpcError(grpc.StatusCode.PERMISSION_DENIED))


# --- against a real server ---


def test_typed_results_and_errors_with_field_violations(running: Running) -> None:
    listed(running)
    with running.matcher() as client:
        hit = client.match([make_hash(MD5, LISTED)], item_id="u1", timeout=5)
        assert (hit.item_id, hit.matched, [r.reference_id for r in hit.references]) == (
            "u1",
            True,
            ["REF-1"],
        )
        with pytest.raises(InvalidArgument) as bad:
            client.match([make_hash(MD5, b"short")])
        assert [v.field for v in bad.value.violations] == ["hashes[0].value"]
        batch = client.match_batch([("a", [make_hash(MD5, LISTED)]), ("b", [make_hash(MD5, b"x")])])
        assert batch[0].matched and isinstance(batch[1].error, InvalidArgument)
        assert batch[1].error.violations[0].field.startswith("items[1].")
    with running.matcher("hotline-a") as wrong, pytest.raises(PermissionDenied):
        wrong.match([make_hash(MD5, LISTED)])


def test_match_file_and_match_files(running: Running, tmp_path: Path) -> None:
    listed(running)
    hit, miss = tmp_path / "hit.bin", tmp_path / "miss.txt"
    hit.write_bytes(b"x")
    miss.write_text("hello")
    with running.matcher() as client:
        # The listed MD5 is the bridge's; match a file through a list holding this one's.
        with running.lists() as lists:
            digest = hashlib.md5(b"x").digest()
            lists.apply_changes("l", "b2", [Change(make_hash(MD5, digest), "REF-X")])
        one = client.match_file(hit, item_id="upload-1")
        assert one.verdict is Verdict.MATCH and one.references[0].reference_id == "REF-X"
        many = client.match_files([hit, miss, tmp_path / "gone"], batch_size=1)
    assert [r.verdict for r in many] == [Verdict.MATCH, Verdict.NO_MATCH, Verdict.SKIPPED]
    assert many[2].reason


def test_async_client_matches_and_maps_errors(running: Running, tmp_path: Path) -> None:
    listed(running)
    (tmp_path / "f.txt").write_text("hello")

    async def main() -> None:
        async with AsyncMatchClient(running.connection("platform")) as client:
            hit, miss = await asyncio.gather(
                client.match([make_hash(MD5, LISTED)], "a"),
                client.match([make_hash(MD5, bytes(16))], "b", timeout=5),
            )
            assert hit.matched and hit.references[0].reference_id == "REF-1"
            assert not miss.matched and miss.item_id == "b"
            batch = await client.match_batch([("0", [make_hash(MD5, LISTED)])])
            assert batch[0].matched
            with pytest.raises(InvalidArgument) as bad:
                await client.match([make_hash(MD5, b"x")])
            assert bad.value.violations[0].field == "hashes[0].value"
            files = await client.match_files([tmp_path / "f.txt", tmp_path / "nope"])
            assert [f.verdict for f in files] == [Verdict.NO_MATCH, Verdict.SKIPPED]
            one = await client.match_file(tmp_path / "f.txt")
            assert one.verdict is Verdict.NO_MATCH
        async with AsyncMatchClient(running.connection("hotline-a")) as wrong:
            with pytest.raises(PermissionDenied):
                await wrong.match([make_hash(MD5, LISTED)])

    asyncio.run(main())


def run_while_server_starts_late(
    tmp_path: Path, call: Callable[[Connection], T]
) -> tuple[T, RecordingPolicy]:
    """Runs ``call`` against a port with no server, starting one once the client retries."""
    first = start(tmp_path)  # tenants and a list in the data folder, then the server goes
    tokens = first.tokens
    listed(first)
    first.service.stop(grace=0)
    port = free_port()
    policy = RecordingPolicy(attempts=1000, initial_backoff=0.02, max_backoff=0.2)
    conn = Connection(server=f"127.0.0.1:{port}", token=tokens["platform"], retry=policy)
    out: dict[str, Any] = {}

    def client() -> None:
        try:
            out["result"] = call(conn)
        except BaseException as exc:  # reported in the test thread
            out["error"] = exc

    thread = threading.Thread(target=client)
    thread.start()
    service = None
    try:
        assert policy.first_wait.wait(30), "the client never retried"
        service = build(Settings(data_dir=tmp_path, listen=f"127.0.0.1:{port}"))
        thread.join(60)
    finally:
        if service is not None:
            service.stop(grace=0)
    assert not thread.is_alive()
    if "error" in out:
        raise out["error"]
    return out["result"], policy


def test_sync_client_retries_until_a_briefly_down_server_is_back(tmp_path: Path) -> None:
    def call(conn: Connection) -> bool:
        with MatchClient(conn) as client:
            return client.match([make_hash(MD5, LISTED)], timeout=60).matched

    matched, policy = run_while_server_starts_late(tmp_path, call)
    assert matched and policy.waits and all(hint is None for _, hint in policy.waits)


def test_async_client_retries_until_a_briefly_down_server_is_back(tmp_path: Path) -> None:
    async def amatch(conn: Connection) -> bool:
        async with AsyncMatchClient(conn) as client:
            result = await client.match([make_hash(MD5, LISTED)], timeout=60)
            return result.matched

    matched, policy = run_while_server_starts_late(tmp_path, lambda c: asyncio.run(amatch(c)))
    assert matched and policy.waits


def test_a_server_that_stays_down_fails_within_the_deadline() -> None:
    conn = Connection(
        server=f"127.0.0.1:{free_port()}",
        retry=RetryPolicy(attempts=10_000, initial_backoff=0.01, max_backoff=0.05),
    )
    with MatchClient(conn) as client, pytest.raises(HashmatchError) as failed:
        client.match([make_hash(MD5, LISTED)], timeout=0.5)
    assert failed.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


# --- RetryInfo, from a stand-in server that asks the client to slow down ---


class Throttling(match_pb2_grpc.MatchServiceServicer):
    """Refuses the first ``refusals`` calls with RESOURCE_EXHAUSTED and a RetryInfo delay."""

    def __init__(self, refusals: int, delay_ms: int) -> None:
        self.refusals = refusals
        self.delay_ms = delay_ms
        self.calls = 0
        self.item_ids: list[str] = []

    def _maybe_refuse(self, context: grpc.ServicerContext) -> None:
        self.calls += 1
        if self.calls <= self.refusals:
            delay = duration_pb2.Duration()
            delay.FromMilliseconds(self.delay_ms)
            detail = any_pb2.Any()
            detail.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
            status = status_pb2.Status(
                code=code_pb2.RESOURCE_EXHAUSTED, message="slow down", details=[detail]
            )
            context.abort_with_status(rpc_status.to_status(status))

    def Match(self, request: Any, context: grpc.ServicerContext) -> match_pb2.MatchResponse:
        self._maybe_refuse(context)
        return match_pb2.MatchResponse(item_id=request.item_id)

    def MatchBatch(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._maybe_refuse(context)
        self.item_ids += [i.item_id for i in request.items]
        return match_pb2.MatchBatchResponse(
            results=[match_pb2.MatchResponse(item_id=i.item_id) for i in request.items]
        )


@pytest.fixture
def throttling() -> Iterator[tuple[Throttling, str]]:
    servicer = Throttling(refusals=2, delay_ms=50)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    match_pb2_grpc.add_MatchServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(grace=0)


def test_retry_info_is_honoured_sync(throttling: tuple[Throttling, str], tmp_path: Path) -> None:
    servicer, address = throttling
    policy = RecordingPolicy(attempts=5)
    (tmp_path / "secret-name.txt").write_text("x")
    with MatchClient(Connection(server=address, retry=policy)) as client:
        files = client.match_files([tmp_path / "secret-name.txt"])
    assert files[0].verdict is Verdict.NO_MATCH
    assert servicer.calls == 3 and [h for _, h in policy.waits] == [0.05, 0.05]
    assert servicer.item_ids == ["0"]  # an opaque counter: the path never leaves


def test_retry_info_is_honoured_async(throttling: tuple[Throttling, str]) -> None:
    servicer, address = throttling
    policy = RecordingPolicy(attempts=5)

    async def main() -> None:
        async with AsyncMatchClient(Connection(server=address, retry=policy)) as client:
            assert not (await client.match([make_hash(MD5, LISTED)])).matched

    asyncio.run(main())
    assert servicer.calls == 3 and [h for _, h in policy.waits] == [0.05, 0.05]


def test_exhausted_retries_raise_the_typed_error(throttling: tuple[Throttling, str]) -> None:
    _, address = throttling
    conn = Connection(server=address, retry=RetryPolicy(attempts=2))
    with MatchClient(conn) as client, pytest.raises(ResourceExhausted) as refused:
        client.match([make_hash(MD5, LISTED)])
    assert refused.value.retry_delay == 0.05


# --- TLS and mTLS, against a stand-in server with its own certificates ---


def make_pki(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for "hashmatch.test" and a client certificate, as PEM."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def issue(
        name: str, issuer: Any, issuer_key: Any, *, ca: bool = False, san: str | None = None
    ) -> tuple[Any, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer or subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if san:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False
            )
        return builder.sign(issuer_key or key, hashes.SHA256()), key

    ca_cert, ca_key = issue("test CA", None, None, ca=True)
    server_cert, server_key = issue("server", ca_cert.subject, ca_key, san="hashmatch.test")
    client_cert, client_key = issue("platform", ca_cert.subject, ca_key)
    out: dict[str, Path] = {}
    for name, cert, key in (
        ("ca", ca_cert, None),
        ("server", server_cert, server_key),
        ("client", client_cert, client_key),
    ):
        out[name] = folder / f"{name}.pem"
        out[name].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        if key is not None:
            out[f"{name}-key"] = folder / f"{name}-key.pem"
            out[f"{name}-key"].write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
    return out


@pytest.mark.parametrize("mutual", [False, True])
def test_tls_and_mtls(tmp_path: Path, mutual: bool) -> None:
    pki = make_pki(tmp_path)
    credentials = grpc.ssl_server_credentials(
        [(pki["server-key"].read_bytes(), pki["server"].read_bytes())],
        root_certificates=pki["ca"].read_bytes() if mutual else None,
        require_client_auth=mutual,
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    match_pb2_grpc.add_MatchServiceServicer_to_server(Throttling(0, 0), server)
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    address = f"127.0.0.1:{port}"
    no_retry = RetryPolicy(attempts=1)
    try:
        tls = TlsConfig(
            ca_file=pki["ca"],
            cert_file=pki["client"] if mutual else None,
            key_file=pki["client-key"] if mutual else None,
            server_name="hashmatch.test",
        )
        with MatchClient(Connection(server=address, tls=tls, retry=no_retry)) as client:
            assert client.match([make_hash(MD5, LISTED)], "t").item_id == "t"

        async def amatch() -> str:
            async with AsyncMatchClient(Connection(server=address, tls=tls)) as aclient:
                return (await aclient.match([make_hash(MD5, LISTED)], "a")).item_id

        assert asyncio.run(amatch()) == "a"
        if mutual:  # without a client certificate the handshake is refused
            anonymous = TlsConfig(ca_file=pki["ca"], server_name="hashmatch.test")
            conn = Connection(server=address, tls=anonymous, retry=no_retry, timeout=5)
            with MatchClient(conn) as client, pytest.raises(HashmatchError):
                client.match([make_hash(MD5, LISTED)])
    finally:
        server.stop(grace=0)
    with pytest.raises(ValueError, match="both"):
        TlsConfig(ca_file=pki["ca"], cert_file=pki["client"])
