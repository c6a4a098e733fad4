"""rpc/tls.py in this process: each unusable TLS file refused with the line that names it,
and how the server says it is reached. test_tls.py checks the same through `hashmatch
serve` in a subprocess, which mutation testing cannot see into (benchmarks/mutation)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from test_tls import Pem, _issue

from hashmatch.server.rpc.tls import TlsFiles, check, describe, server_credentials
from hashmatch.server.settings import Settings, SettingsError


@pytest.fixture(scope="module")
def pems(tmp_path_factory: pytest.TempPathFactory) -> tuple[Pem, Pem, Pem]:
    out = tmp_path_factory.mktemp("pems")
    ca, ca_cert, ca_key = _issue(out, "ca", None, ca=True)
    server, _, _ = _issue(out, "server", (ca_cert, ca_key), server=True)
    other, _, _ = _issue(out, "other", (ca_cert, ca_key), server=True)
    return ca, server, other


def settings(
    tmp_path: Path, cert: Path | None, key: Path | None, client_ca: Path | None = None
) -> Settings:
    return Settings(data_dir=tmp_path, tls_cert=cert, tls_key=key, tls_client_ca=client_ca)


def refused(s: Settings) -> str:
    with pytest.raises(SettingsError) as err:
        check(s)
    return str(err.value)


def test_describe_names_the_three_ways(tmp_path: Path, pems: tuple[Pem, Pem, Pem]) -> None:
    ca, server, _ = pems
    assert describe(settings(tmp_path, None, None)) == "plaintext"
    assert describe(settings(tmp_path, server.cert, server.key)) == "TLS"
    assert (
        describe(settings(tmp_path, server.cert, server.key, ca.cert))
        == "mTLS: client certificates required"
    )


def test_without_both_files_nothing_is_read(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    assert check(settings(tmp_path, None, None)) is None
    assert check(settings(tmp_path, missing, None)) is None
    assert check(settings(tmp_path, None, missing)) is None
    assert server_credentials(settings(tmp_path, None, None)) is None
    assert server_credentials(settings(tmp_path, missing, None)) is None


def test_usable_files_pass_and_their_bytes_are_what_is_served(
    tmp_path: Path, pems: tuple[Pem, Pem, Pem]
) -> None:
    ca, server, _ = pems
    chain, key = server.cert.read_bytes(), server.key.read_bytes()
    assert check(settings(tmp_path, server.cert, server.key)) == TlsFiles(chain, key, None)
    assert check(settings(tmp_path, server.cert, server.key, ca.cert)) == TlsFiles(
        chain, key, ca.cert.read_bytes()
    )
    assert server_credentials(settings(tmp_path, server.cert, server.key)) is not None
    assert server_credentials(settings(tmp_path, server.cert, server.key, ca.cert)) is not None


def test_a_missing_file_is_named(tmp_path: Path, pems: tuple[Pem, Pem, Pem]) -> None:
    _, server, _ = pems
    missing = tmp_path / "missing.pem"
    assert refused(settings(tmp_path, missing, server.key)) == (
        f"cannot read the TLS certificate {missing}: No such file or directory"
    )
    assert refused(settings(tmp_path, server.cert, missing)) == (
        f"cannot read the TLS key {missing}: No such file or directory"
    )
    assert refused(settings(tmp_path, server.cert, server.key, missing)) == (
        f"cannot read the TLS client CA {missing}: No such file or directory"
    )


def test_files_without_pem_are_named(tmp_path: Path, pems: tuple[Pem, Pem, Pem]) -> None:
    _, server, _ = pems
    junk = tmp_path / "junk.pem"
    junk.write_text("not a pem file\n")
    assert refused(settings(tmp_path, junk, server.key)) == (
        f"the TLS certificate {junk} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
    )
    assert refused(settings(tmp_path, server.cert, junk)) == (
        f"the TLS key {junk} holds no PEM private key (-----BEGIN PRIVATE KEY-----)"
    )
    assert refused(settings(tmp_path, server.cert, server.key, junk)) == (
        f"the TLS client CA {junk} holds no PEM certificate"
    )


def test_an_encrypted_key_is_named(tmp_path: Path, pems: tuple[Pem, Pem, Pem]) -> None:
    _, server, _ = pems
    key = tmp_path / "encrypted.key"
    key.write_text(
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"
    )
    assert refused(settings(tmp_path, server.cert, key)) == (
        f"the TLS key {key} is encrypted: gRPC needs it unencrypted "
        "(openssl pkey -in KEY -out KEY.plain)"
    )


def test_a_key_of_another_certificate_is_named(tmp_path: Path, pems: tuple[Pem, Pem, Pem]) -> None:
    _, server, other = pems
    assert refused(settings(tmp_path, server.cert, other.key)) == (
        f"the TLS key {other.key} is not the key of the certificate {server.cert}"
    )


def test_a_damaged_certificate_is_named(tmp_path: Path, pems: tuple[Pem, Pem, Pem]) -> None:
    _, server, _ = pems
    cert = tmp_path / "damaged.crt"
    cert.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    # OpenSSL's own words, as the standard library reports them (its reason code when it
    # gives one, else its message: here "[SSL] PEM lib ...").
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with pytest.raises(ssl.SSLError) as openssl:
        context.load_cert_chain(cert, server.key)
    said = openssl.value.reason or str(openssl.value)
    assert "PEM" in said
    assert refused(settings(tmp_path, cert, server.key)) == (
        f"cannot use the TLS certificate {cert} with the key {server.key}: {said}"
    )
