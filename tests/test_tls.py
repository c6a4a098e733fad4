"""TLS and mTLS from settings, with certificates generated here."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from hashmatch.client import (
    MD5,
    AsyncMatchClient,
    Connection,
    ListClient,
    MatchClient,
    RetryPolicy,
    TlsConfig,
    Unauthenticated,
    Unavailable,
    make_hash,
)
from hashmatch.client.errors import tls_hint
from hashmatch.server.app import Service, build
from hashmatch.server.settings import Settings, SettingsError
from hashmatch.server.store import Role
from hashmatch.v1 import match_pb2, match_pb2_grpc

HASHMATCH = str(Path(sys.executable).parent / "hashmatch")

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402


@dataclass
class Pem:
    cert: Path
    key: Path


def _issue(
    out: Path,
    name: str,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> tuple[Pem, x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    cert = builder.sign(issuer[1] if issuer else key, hashes.SHA256())
    pem = Pem(out / f"{name}.crt", out / f"{name}.key")
    pem.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pem, cert, key


@dataclass
class Pki:
    ca: Pem
    server: Pem
    client: Pem
    stranger: Pem  # a client certificate from another CA


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    out = tmp_path_factory.mktemp("pki")
    ca, ca_cert, ca_key = _issue(out, "ca", None, ca=True)
    server, _, _ = _issue(out, "server", (ca_cert, ca_key), server=True)
    client, _, _ = _issue(out, "client", (ca_cert, ca_key))
    _, other_cert, other_key = _issue(out, "other-ca", None, ca=True)
    stranger, _, _ = _issue(out, "stranger", (other_cert, other_key))
    return Pki(ca, server, client, stranger)


def _serve(tmp_path: Path, pki: Pki, mtls: bool) -> tuple[Service, str]:
    settings = Settings(
        data_dir=tmp_path,
        listen="127.0.0.1:0",
        tls_cert=pki.server.cert,
        tls_key=pki.server.key,
        tls_client_ca=pki.ca.cert if mtls else None,
    ).check()
    service = build(settings)
    return service, service.store.add_tenant("platform", Role.PLATFORM)


@pytest.fixture
def tls_server(tmp_path: Path, pki: Pki) -> Iterator[tuple[Service, str]]:
    service, token = _serve(tmp_path, pki, mtls=False)
    yield service, token
    service.stop(grace=0)


@pytest.fixture
def mtls_server(tmp_path: Path, pki: Pki) -> Iterator[tuple[Service, str]]:
    service, token = _serve(tmp_path, pki, mtls=True)
    yield service, token
    service.stop(grace=0)


def _match(
    service: Service, token: str, pki: Pki, client: Pem | None, secure: bool = True
) -> match_pb2.MatchResponse:
    address = f"127.0.0.1:{service.port}"
    if secure:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=pki.ca.cert.read_bytes(),
            private_key=client.key.read_bytes() if client else None,
            certificate_chain=client.cert.read_bytes() if client else None,
        )
        channel = grpc.secure_channel(address, credentials)
    else:
        channel = grpc.insecure_channel(address)
    with channel:
        return match_pb2_grpc.MatchServiceStub(channel).Match(
            match_pb2.MatchRequest(hashes=[make_hash(MD5, bytes(16))]),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=5,
        )


def test_tls_serves_a_client_that_trusts_the_ca(tls_server: tuple[Service, str], pki: Pki) -> None:
    service, token = tls_server
    assert _match(service, token, pki, None).verdict == match_pb2.VERDICT_NO_MATCH


def test_tls_refuses_plaintext(tls_server: tuple[Service, str], pki: Pki) -> None:
    service, token = tls_server
    with pytest.raises(grpc.RpcError) as info:
        _match(service, token, pki, None, secure=False)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mtls_serves_a_client_certificate_from_the_ca(
    mtls_server: tuple[Service, str], pki: Pki
) -> None:
    service, token = mtls_server
    assert _match(service, token, pki, pki.client).verdict == match_pb2.VERDICT_NO_MATCH


@pytest.mark.parametrize("who", ["missing", "stranger"])
def test_mtls_refuses_a_missing_or_foreign_client_certificate(
    mtls_server: tuple[Service, str], pki: Pki, who: str
) -> None:
    service, token = mtls_server
    with pytest.raises(grpc.RpcError) as info:
        _match(service, token, pki, None if who == "missing" else pki.stranger)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


# --- what the SDK says when a connection fails because of TLS ---------------------------


@pytest.fixture
def plain_server(tmp_path: Path) -> Iterator[tuple[Service, str]]:
    settings = Settings(data_dir=tmp_path, listen="127.0.0.1:0").check()
    service = build(settings)
    yield service, service.store.add_tenant("platform", Role.PLATFORM)
    service.stop(grace=0)


def _sdk_error(service: Service, token: str, tls: TlsConfig | None) -> Unavailable:
    connection = Connection(
        server=f"127.0.0.1:{service.port}",
        token=token,
        tls=tls,
        timeout=5,
        retry=RetryPolicy(attempts=2, initial_backoff=0.01),
    )
    with MatchClient(connection) as client, pytest.raises(Unavailable) as info:
        client.match([make_hash(MD5, bytes(16))])
    return info.value


def test_plaintext_client_at_a_tls_server_is_told_to_pass_a_ca(
    tls_server: tuple[Service, str],
) -> None:
    error = _sdk_error(*tls_server, None)
    assert error.message.startswith(
        "the server closed the connection at once: it likely requires TLS: pass --ca-file"
    ), error.message


def test_tls_client_at_a_plaintext_server_is_told_it_does_not_speak_tls(
    plain_server: tuple[Service, str], pki: Pki
) -> None:
    error = _sdk_error(*plain_server, TlsConfig(ca_file=pki.ca.cert))
    assert error.message.startswith("the server does not speak TLS"), error.message


def test_a_server_certificate_from_another_ca_fails_verification_in_words(
    tls_server: tuple[Service, str], tmp_path: Path, pki: Pki
) -> None:
    error = _sdk_error(*tls_server, TlsConfig(ca_file=pki.stranger.cert.parent / "other-ca.crt"))
    assert error.message.startswith(
        "certificate verify failed: the server's certificate is not signed by the CA given"
    ), error.message


def test_a_certificate_for_another_name_is_named(tls_server: tuple[Service, str], pki: Pki) -> None:
    error = _sdk_error(*tls_server, TlsConfig(ca_file=pki.ca.cert, server_name="example.org"))
    assert error.message.startswith(
        "the server's certificate is not issued to the address dialled"
    ), error.message


def test_mtls_without_a_client_certificate_says_one_is_required(
    mtls_server: tuple[Service, str], pki: Pki
) -> None:
    error = _sdk_error(*mtls_server, TlsConfig(ca_file=pki.ca.cert))
    assert "requires a client certificate (mTLS): pass --cert-file and --key-file" in (
        error.message
    ), error.message


def test_mtls_with_a_foreign_client_certificate_says_it_was_refused(
    mtls_server: tuple[Service, str], pki: Pki
) -> None:
    tls = TlsConfig(ca_file=pki.ca.cert, cert_file=pki.stranger.cert, key_file=pki.stranger.key)
    error = _sdk_error(*mtls_server, tls)
    assert "refused the client certificate (mTLS)" in error.message, error.message


def test_the_async_client_explains_too(tls_server: tuple[Service, str]) -> None:
    service, token = tls_server
    connection = Connection(
        server=f"127.0.0.1:{service.port}", token=token, timeout=5, retry=RetryPolicy(attempts=1)
    )

    async def go() -> None:
        async with AsyncMatchClient(connection) as client:
            await client.match([make_hash(MD5, bytes(16))])

    with pytest.raises(Unavailable) as info:
        asyncio.run(go())
    assert "it likely requires TLS" in info.value.message, info.value.message


def test_other_failures_keep_grpc_s_message() -> None:
    assert tls_hint("failed to connect to all addresses; Connection refused", tls=True) == ""
    assert "if it serves TLS, pass --ca-file" in tls_hint("ipv4:127.0.0.1:1: Socket closed")


# --- the server refuses unusable certificate files at start, in one line ----------------


def _tls_flags(*files: Path) -> list[str]:
    names = ("tls-cert", "tls-key", "tls-client-ca")
    return [f"--{name}={path}" for name, path in zip(names, files, strict=False)]


def _serve_cli(tmp_path: Path, *tls: Path) -> subprocess.CompletedProcess[str]:
    flags = _tls_flags(*tls)
    return subprocess.run(
        [
            HASHMATCH,
            "serve",
            "--data-dir",
            str(tmp_path / "data"),
            "--listen",
            "127.0.0.1:0",
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing-cert", "cannot read the TLS certificate"),
        ("key-of-another-cert", "is not the key of the certificate"),
        ("junk-cert", "holds no PEM certificate"),
        ("junk-key", "holds no PEM private key"),
        ("junk-client-ca", "the TLS client CA"),
    ],
)
def test_serve_refuses_unusable_tls_files_in_one_line(
    tmp_path: Path, pki: Pki, case: str, expected: str
) -> None:
    if not Path(HASHMATCH).exists():
        pytest.skip("the hashmatch command is not installed in this environment")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a PEM file\n")
    files = {
        "missing-cert": (tmp_path / "nope.crt", pki.server.key),
        "key-of-another-cert": (pki.server.cert, pki.client.key),
        "junk-cert": (junk, pki.server.key),
        "junk-key": (pki.server.cert, junk),
        "junk-client-ca": (pki.server.cert, pki.server.key, junk),
    }[case]
    done = _serve_cli(tmp_path, *files)
    assert done.returncode == 2, done.stderr
    assert "hashmatch serving on" not in done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hashmatch: "), done.stderr
    assert expected in lines[0], lines[0]
    assert not (tmp_path / "data").exists(), "refused before creating a store"


@pytest.mark.parametrize("mtls", [False, True])
def test_serve_says_tls_is_on_and_keeps_the_banner(tmp_path: Path, pki: Pki, mtls: bool) -> None:
    if not Path(HASHMATCH).exists():
        pytest.skip("the hashmatch command is not installed in this environment")
    files = [pki.server.cert, pki.server.key] + ([pki.ca.cert] if mtls else [])
    flags = _tls_flags(*files)
    proc = subprocess.Popen(
        [HASHMATCH, "serve", "--data-dir", str(tmp_path), "--listen", "127.0.0.1:0", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline()
        assert line.startswith("hashmatch serving on "), line
        assert line.split()[-1].startswith("127.0.0.1:")
        note = proc.stderr.readline()
        want = "mTLS: client certificates required" if mtls else "TLS"
        assert note == f"hashmatch: serving with {want}\n", note
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_test_ca_script_makes_certificates_that_serve_mtls(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parent.parent / "scripts" / "test-ca.sh"
    if shutil.which("openssl") is None or shutil.which("bash") is None:
        pytest.skip("scripts/test-ca.sh needs bash and openssl")
    out = tmp_path / "ca"
    done = subprocess.run(
        ["bash", str(script), str(out)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    made = Pki(
        Pem(out / "ca.crt", out / "ca.key"),
        Pem(out / "server.crt", out / "server.key"),
        Pem(out / "client.crt", out / "client.key"),
        Pem(out / "client.crt", out / "client.key"),
    )
    service, token = _serve(tmp_path, made, mtls=True)
    try:
        tls = TlsConfig(ca_file=made.ca.cert, cert_file=made.client.cert, key_file=made.client.key)
        connection = Connection(server=f"127.0.0.1:{service.port}", token=token, tls=tls)
        with MatchClient(connection) as client:
            assert not client.match([make_hash(MD5, bytes(16))]).matched
    finally:
        service.stop(grace=0)
    again = subprocess.run(["bash", str(script), str(out)], capture_output=True, text=True)
    assert again.returncode == 1 and "exists" in again.stderr, "never overwrites a CA"


def test_failed_handshakes_leave_no_grpc_core_lines_on_the_servers_stderr(
    tmp_path: Path, pki: Pki
) -> None:
    if not Path(HASHMATCH).exists():
        pytest.skip("the hashmatch command is not installed in this environment")
    flags = _tls_flags(pki.server.cert, pki.server.key)
    proc = subprocess.Popen(
        [HASHMATCH, "serve", "--data-dir", str(tmp_path), "--listen", "127.0.0.1:0", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        address = proc.stdout.readline().split()[-1]
        for _ in range(3):  # plaintext clients at a TLS server: each handshake fails
            with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError):
                match_pb2_grpc.MatchServiceStub(channel).Match(match_pb2.MatchRequest(), timeout=2)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "Handshake failed" not in err and "ssl_transport_security" not in err, err


# --- a replica follows a TLS primary with --follow-ca ------------------------------------


def _tls_replica(tmp_path: Path, primary: Service, token: str, **tls: Path) -> Service:
    settings = Settings(
        data_dir=tmp_path / "replica",
        listen="127.0.0.1:0",
        poll_interval=0.01,
        follow=f"127.0.0.1:{primary.port}",
        follow_token=token,
        **tls,  # type: ignore[arg-type]
    ).check()
    return build(settings)


def _replica_lists(replica: Service, token: str) -> set[str]:
    connection = Connection(
        server=f"127.0.0.1:{replica.port}", token=token, retry=RetryPolicy(attempts=1)
    )
    try:
        with ListClient(connection) as client:
            return {x.name for x in client.list_lists()}
    except Unauthenticated:  # tenants not copied yet
        return set()


@pytest.mark.parametrize("mtls", [False, True])
def test_a_replica_follows_a_tls_primary_with_follow_ca(
    tmp_path: Path, pki: Pki, mtls: bool
) -> None:
    primary, _ = _serve(tmp_path / "primary", pki, mtls=mtls)
    replica = None
    try:
        token = primary.store.add_tenant("mirror", Role.REPLICA)
        hotline = primary.store.add_tenant("hotline", Role.HOTLINE)
        client = {"follow_cert": pki.client.cert, "follow_key": pki.client.key} if mtls else {}
        tls = TlsConfig(
            ca_file=pki.ca.cert,
            cert_file=client.get("follow_cert"),
            key_file=client.get("follow_key"),
        )
        connection = Connection(server=f"127.0.0.1:{primary.port}", token=hotline, tls=tls)
        with ListClient(connection) as lists:
            lists.create_list("copied")
        replica = _tls_replica(tmp_path, primary, token, follow_ca=pki.ca.cert, **client)
        deadline = time.monotonic() + 20
        while "copied" not in _replica_lists(replica, token):
            assert time.monotonic() < deadline, "the replica never copied the list"
            time.sleep(0.05)
    finally:
        if replica is not None:
            replica.stop(grace=0)
        primary.stop(grace=0)


def test_a_replica_without_follow_ca_is_told_the_primary_requires_tls(
    tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    primary, _ = _serve(tmp_path / "primary", pki, mtls=False)
    token = primary.store.add_tenant("mirror", Role.REPLICA)
    caplog.set_level(logging.WARNING, logger="hashmatch")
    replica = _tls_replica(tmp_path, primary, token)
    try:
        deadline = time.monotonic() + 20
        while not any("not following primary" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "the replica logged no warning"
            time.sleep(0.05)
        (warning,) = [r for r in caplog.records if "not following primary" in r.getMessage()]
        assert "if it serves TLS, pass --ca-file" in warning.getMessage(), warning.getMessage()
    finally:
        replica.stop(grace=0)
        primary.stop(grace=0)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"follow_cert": "client.crt"}, "follow_cert and follow_key must be given together"),
        ({"follow_cert": "client.crt", "follow_key": "client.key"}, "need follow_ca"),
        ({"follow_ca": "nope.crt"}, "cannot read the follow CA"),
        ({"follow_ca": "client.key"}, "the follow CA"),
    ],
)
def test_follow_tls_settings_are_checked(pki: Pki, given: dict[str, str], expected: str) -> None:
    values = {k: str(pki.ca.cert.parent / v) for k, v in given.items()}
    with pytest.raises(SettingsError, match=expected):
        Settings.load(values, env={})
