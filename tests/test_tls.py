"""TLS and mTLS from settings, with certificates generated here."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from hashmatch.client import MD5, make_hash
from hashmatch.server.app import Service, build
from hashmatch.server.settings import Settings
from hashmatch.server.store import Role
from hashmatch.v1 import match_pb2, match_pb2_grpc

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
