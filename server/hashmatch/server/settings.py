"""The service's one settings object, passed explicitly from the CLI to every part.

Values come from, lowest to highest precedence: the defaults below, an optional TOML file
(`--config FILE`), the environment (`HASHMATCH_<FIELD>`, e.g. `HASHMATCH_LISTEN`), and
command-line flags. Per-tenant rate limits come only from the TOML file:

    [tenants.big-platform]
    rate = 50000      # match items per second, per serving process
    burst = 100000    # bucket size
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hashmatch.server.store import DEFAULT_MAP_SIZE

if TYPE_CHECKING:
    from hashmatch.client.connection import TlsConfig

ENV_PREFIX = "HASHMATCH_"
# Environment names that are not HASHMATCH_<FIELD>: the client CLI's token variable.
ENV_ALIASES = {"follow_token": "HASHMATCH_TOKEN"}


class SettingsError(ValueError):
    """A configuration value that cannot be used; the message names its source."""


@dataclass(frozen=True)
class TenantLimit:
    """A token bucket: `rate` match items per second, at most `burst` at once."""

    rate: float
    burst: float


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("data")
    listen: str = "127.0.0.1:50051"
    # Serving processes sharing the port (SO_REUSEPORT) and the LMDB folder.
    workers: int = 1
    # LMDB address space reserved up front; the file only grows as data is written.
    map_size: int = DEFAULT_MAP_SIZE
    # How often a serving process polls the change log for batches committed elsewhere.
    poll_interval: float = 0.02
    # Threads per process for calls that block (store writes, large batches); calls are
    # served on one event loop, so an open stream or a slow client holds no thread.
    threads: int = 16
    # Unary calls in progress per process; beyond it RESOURCE_EXHAUSTED at once (no
    # unbounded queue). One tenant may hold at most `tenant_share` of them.
    max_concurrent_rpcs: int = 64
    tenant_share: float = 0.5
    # Open streams (MatchStream, UploadChanges, WatchChanges) per process and per tenant.
    max_streams: int = 4096
    max_tenant_streams: int = 256
    # Seconds a client-streaming call may go without sending a message before it is ended.
    stream_idle_timeout: float = 60.0
    max_message_bytes: int = 64 * 1024 * 1024
    # Server-side deadline (seconds) for unary calls that carry none or a longer one.
    deadline_cap: float = 30.0
    # The same for MatchStream and UploadChanges (WatchChanges follows forever).
    stream_deadline_cap: float = 3600.0
    # Default per-tenant token bucket, per serving process: match items per second
    # (a MatchBatch costs its item count, every other call 1). 0 disables rate limits.
    rate_limit: float = 2_000_000.0
    rate_burst: float = 2_000_000.0
    tenants: Mapping[str, TenantLimit] = field(default_factory=dict)
    # Seconds in-flight calls get to finish on shutdown.
    grace: float = 5.0
    # How often in-memory match counts and gauges are flushed (seconds).
    stats_interval: float = 1.0
    # TLS: certificate chain and key (PEM). With a client CA, clients must present a
    # certificate signed by it (mTLS).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    # Prometheus metrics over HTTP, HOST:PORT (port 0: any free); None disables them.
    metrics_listen: str | None = None
    # "json" (one JSON object per line), "text", or "auto" (JSON unless stderr is a tty).
    log_format: str = "auto"
    log_level: str = "INFO"
    # Follow another hashmatch server as a read-only replica (HOST:PORT) with a replica token.
    follow: str | None = None
    follow_token: str | None = None
    # TLS to the primary: the CA (PEM) that verifies its certificate and, for an mTLS
    # primary, this replica's client certificate and key. Without follow_ca, plaintext.
    follow_ca: Path | None = None
    follow_cert: Path | None = None
    follow_key: Path | None = None
    # A replica whose copy is not proven current for this many seconds (no heartbeat of the
    # primary applied: cut off, or applying too slowly) reports NOT_SERVING so a load
    # balancer takes it out of rotation; 0 = never (it serves whatever it has).
    max_lag: float = 0.0
    # Map each list from its segment file at start (written beside the store, in
    # DATA_DIR/segments) instead of rebuilding it from LMDB; a list's file is rewritten once
    # the list has changed and then stayed unchanged for segment_quiet seconds.
    segments: bool = True
    segment_quiet: float = 10.0
    # Create the benign demo list (and demo tenants) when the data folder has none.
    demo: bool = False

    def limit_for(self, tenant: str) -> TenantLimit | None:
        """The tenant's bucket, or None when it is not rate-limited."""
        limit = self.tenants.get(tenant)
        if limit is not None:
            return limit if limit.rate > 0 else None
        if self.rate_limit <= 0:
            return None
        return TenantLimit(self.rate_limit, max(self.rate_burst, 1.0))

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    def follow_tls(self) -> TlsConfig | None:
        """How a replica reaches its primary: None (plaintext) unless follow_ca is set."""
        if self.follow_ca is None:
            return None
        from hashmatch.client.connection import TlsConfig

        return TlsConfig(
            ca_file=self.follow_ca, cert_file=self.follow_cert, key_file=self.follow_key
        )

    def check(self) -> Settings:
        if self.workers < 1:
            raise SettingsError("workers must be at least 1")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise SettingsError("tls_cert and tls_key must be given together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise SettingsError("tls_client_ca needs tls_cert and tls_key")
        if self.max_lag < 0:
            raise SettingsError("max_lag must be >= 0 seconds")
        if self.segment_quiet < 0:
            raise SettingsError("segment_quiet must be >= 0 seconds")
        if (self.follow_cert is None) != (self.follow_key is None):
            raise SettingsError("follow_cert and follow_key must be given together")
        if self.follow_cert is not None and self.follow_ca is None:
            raise SettingsError("follow_cert and follow_key need follow_ca")
        for what, path, marker in (
            ("follow CA", self.follow_ca, b"-----BEGIN CERTIFICATE-----"),
            ("follow certificate", self.follow_cert, b"-----BEGIN CERTIFICATE-----"),
            ("follow key", self.follow_key, b"PRIVATE KEY-----"),
        ):
            if path is None:
                continue
            try:
                pem = path.read_bytes()
            except OSError as exc:
                raise SettingsError(f"cannot read the {what} {path}: {exc.strerror}") from None
            if marker not in pem:
                raise SettingsError(f"the {what} {path} holds no PEM ({marker.decode()})")
        if self.log_format not in ("auto", "json", "text"):
            raise SettingsError("log_format must be auto, json or text")
        if self.threads < 1 or self.max_concurrent_rpcs < 1:
            raise SettingsError("threads and max_concurrent_rpcs must be at least 1")
        if self.max_streams < 1 or self.max_tenant_streams < 1:
            raise SettingsError("max_streams and max_tenant_streams must be at least 1")
        if not 0 < self.tenant_share <= 1:
            raise SettingsError("tenant_share must be more than 0 and at most 1")
        if self.stream_idle_timeout <= 0:
            raise SettingsError("stream_idle_timeout must be positive")
        return self

    @classmethod
    def load(
        cls,
        flags: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        config_file: Path | None = None,
    ) -> Settings:
        """Defaults < TOML file < environment < flags (flags that are None are not given)."""
        values: dict[str, Any] = {}
        if config_file is not None:
            values.update(_from_toml(config_file))
        values.update(_from_env(os.environ if env is None else env))
        values.update({k: v for k, v in (flags or {}).items() if v is not None})
        return cls.from_mapping(values, "settings").check()

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], source: str) -> Settings:
        hints = typing.get_type_hints(cls)
        known = {f.name for f in dataclasses.fields(cls)}
        out: dict[str, Any] = {}
        for name, value in raw.items():
            if name not in known:
                raise SettingsError(f"{source}: unknown setting {name!r}")
            out[name] = _coerce(hints[name], value, f"{source}: {name}")
        return cls(**out)


def _from_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"cannot read config file {path}: {exc}") from None
    values = {k.replace("-", "_"): v for k, v in data.items()}
    if "tenants" in values:
        tenants = values["tenants"]
        if not isinstance(tenants, dict):
            raise SettingsError(f"{path}: [tenants] must be a table of tables")
        values["tenants"] = {
            name: _tenant_limit(name, spec, str(path)) for name, spec in tenants.items()
        }
    return values


def _tenant_limit(name: str, spec: object, source: str) -> TenantLimit:
    if not isinstance(spec, dict) or "rate" not in spec:
        raise SettingsError(f"{source}: [tenants.{name}] needs rate (and optionally burst)")
    unknown = set(spec) - {"rate", "burst"}
    if unknown:
        raise SettingsError(f"{source}: [tenants.{name}] unknown keys {sorted(unknown)}")
    try:
        rate = float(spec["rate"])
        burst = float(spec.get("burst", max(rate, 1.0)))
    except (TypeError, ValueError):
        raise SettingsError(f"{source}: [tenants.{name}] rate and burst are numbers") from None
    return TenantLimit(rate, burst)


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        if f.name == "tenants":
            continue
        key = ENV_ALIASES.get(f.name, ENV_PREFIX + f.name.upper())
        if key in env and env[key] != "":
            out[f.name] = env[key]
    return out


def _coerce(hint: Any, value: Any, where: str) -> Any:
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None:
            return None
        (hint,) = [a for a in args if a is not type(None)]
    try:
        if hint is bool:
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                    raise ValueError(value)
                return lowered in ("1", "true", "yes", "on")
            return bool(value)
        if hint is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if hint is float:
            return float(value)
        if hint is str:
            return str(value)
        if hint is Path:
            return Path(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{where}: {value!r} is not a valid {hint.__name__}") from None
    return value
