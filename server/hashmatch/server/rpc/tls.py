"""Server TLS credentials from the certificate files named in the settings."""

from __future__ import annotations

from pathlib import Path

import grpc

from hashmatch.server.settings import Settings, SettingsError


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SettingsError(f"cannot read the {what} {path}: {exc.strerror}") from None


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """None without TLS; with a client CA, clients must present a certificate it signed."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    chain = _read(settings.tls_cert, "TLS certificate")
    key = _read(settings.tls_key, "TLS key")
    client_ca = (
        _read(settings.tls_client_ca, "TLS client CA")
        if settings.tls_client_ca is not None
        else None
    )
    return grpc.ssl_server_credentials(
        [(key, chain)],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )
