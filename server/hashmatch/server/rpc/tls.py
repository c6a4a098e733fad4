"""Server TLS credentials from the certificate files named in the settings.

grpc core only notices a bad certificate, key or CA when it binds the port, and then says
"Failed to bind to address" (with its reasons on stderr); `check` reads the files with the
standard library first, so each mistake is refused at start in one line that names it.
The credentials are made of the bytes `check` read: each file is read once, and what is
served is what was checked.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc

from hashmatch.server.settings import Settings, SettingsError


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SettingsError(f"cannot read the {what} {path}: {exc.strerror}") from None


@dataclass(frozen=True)
class TlsFiles:
    """The PEM bytes of the TLS files, as read and checked."""

    chain: bytes
    key: bytes
    client_ca: bytes | None


def check(settings: Settings) -> TlsFiles | None:
    """The TLS files' contents; SettingsError naming the first unusable one; None without
    TLS."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    cert = _read(settings.tls_cert, "TLS certificate")
    key = _read(settings.tls_key, "TLS key")
    if b"-----BEGIN CERTIFICATE-----" not in cert:
        raise SettingsError(
            f"the TLS certificate {settings.tls_cert} holds no PEM certificate "
            "(-----BEGIN CERTIFICATE-----)"
        )
    if b"PRIVATE KEY-----" not in key:
        raise SettingsError(
            f"the TLS key {settings.tls_key} holds no PEM private key (-----BEGIN PRIVATE KEY-----)"
        )
    if b"ENCRYPTED" in key:
        raise SettingsError(
            f"the TLS key {settings.tls_key} is encrypted: gRPC needs it unencrypted "
            "(openssl pkey -in KEY -out KEY.plain)"
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise SettingsError(
                f"the TLS key {settings.tls_key} is not the key of the certificate "
                f"{settings.tls_cert}"
            ) from None
        raise SettingsError(
            f"cannot use the TLS certificate {settings.tls_cert} with the key "
            f"{settings.tls_key}: {exc.reason or exc}"
        ) from None
    client_ca = None
    if settings.tls_client_ca is not None:
        client_ca = _read(settings.tls_client_ca, "TLS client CA")
        try:
            context.load_verify_locations(settings.tls_client_ca)
        except ssl.SSLError:
            raise SettingsError(
                f"the TLS client CA {settings.tls_client_ca} holds no PEM certificate"
            ) from None
    return TlsFiles(cert, key, client_ca)


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """None without TLS; with a client CA, clients must present a certificate it signed."""
    files = check(settings)
    if files is None:
        return None
    return grpc.ssl_server_credentials(
        [(files.key, files.chain)],
        root_certificates=files.client_ca,
        require_client_auth=files.client_ca is not None,
    )


def describe(settings: Settings) -> str:
    """How the server is reached: "plaintext", "TLS" or "mTLS: client certificates required"."""
    if settings.tls_cert is None:
        return "plaintext"
    if settings.tls_client_ca is None:
        return "TLS"
    return "mTLS: client certificates required"
