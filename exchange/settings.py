"""One typed, frozen settings object per process, read from the environment.

Only composition roots (the CLI entry points) call :func:`load_settings`; everything else
receives the object. A bad value raises :class:`engine.errors.ConfigError` whose message is
one line naming the variable and what is wrong, so the CLI can stop with exactly that line.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from engine.errors import ConfigError

Port = Annotated[int, Field(ge=1, le=65535)]
PortOrZero = Annotated[int, Field(ge=0, le=65535)]  # 0 = pick a free port
MetricsPort = Annotated[int, Field(ge=0, le=65535)]  # 0 = serve no metrics endpoint


class Settings(BaseSettings):
    """Field names are the environment variable names, lower-cased."""

    model_config = SettingsConfigDict(frozen=True, case_sensitive=False, extra="ignore")

    # Unset means: start the embedded broker (Tansu) on this machine.
    kafka_bootstrap_servers: str | None = None
    # Unset means: use the embedded SQLite store under EXCHANGE_DATA_DIR.
    cassandra_contact_points: Annotated[tuple[str, ...] | None, NoDecode] = None
    cassandra_port: Port = 9042
    cassandra_keyspace: str = Field(default="exchange", pattern=r"^[A-Za-z][A-Za-z0-9_]{0,47}$")

    exchange_data_dir: Path = Path("./data")
    exchange_host: str = "127.0.0.1"
    exchange_port: Port = 8000
    exchange_broker_port: PortOrZero = 0
    exchange_markets_file: Path | None = None
    exchange_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    tansu_bin: Path | None = None

    exchange_topic_orders: str = Field(default="orders", pattern=r"^[A-Za-z0-9._-]{1,200}$")
    exchange_topic_engine_output: str = Field(
        default="engine-output", pattern=r"^[A-Za-z0-9._-]{1,200}$"
    )
    exchange_topic_orders_dlq: str = Field(default="orders.dlq", pattern=r"^[A-Za-z0-9._-]{1,200}$")
    exchange_topic_engine_output_dlq: str = Field(
        default="engine-output.dlq", pattern=r"^[A-Za-z0-9._-]{1,200}$"
    )
    exchange_topic_engine_snapshots: str = Field(
        default="engine-snapshots", pattern=r"^[A-Za-z0-9._-]{1,200}$"
    )
    exchange_engine_output_partitions: int = Field(default=4, ge=1, le=1024)
    exchange_dlq_partitions: int = Field(default=1, ge=1, le=1024)

    exchange_engine_batch_size: int = Field(default=5000, ge=1, le=1_000_000)
    exchange_snapshot_every_commands: int = Field(default=100_000, ge=1)
    exchange_snapshot_every_seconds: float = Field(default=60.0, gt=0)
    exchange_snapshot_store: Literal["kafka", "file"] = "kafka"
    exchange_settlement_batch_max_records: int = Field(default=2000, ge=1, le=100_000)
    exchange_settlement_batch_max_ms: int = Field(default=50, ge=1, le=60_000)
    exchange_settlement_commit_every_ms: int = Field(default=200, ge=0, le=600_000)

    # Prometheus /metrics of each service, on EXCHANGE_HOST (the gateway serves its own at
    # /metrics on EXCHANGE_PORT). The lag exporter is the `lag` service of `exchange up`.
    exchange_engine_metrics_port: MetricsPort = 9101
    exchange_settlement_metrics_port: MetricsPort = 9102
    exchange_lag_metrics_port: MetricsPort = 9103
    # The /metrics URLs the gateway's /dashboard scrapes, comma-separated. Unset: the local
    # stack's (EXCHANGE_HOST and the three ports above), as `exchange up` runs it; the compose
    # stack names its containers instead; empty: none.
    exchange_dashboard_sources: Annotated[tuple[str, ...] | None, NoDecode] = None

    # Liveness: a consumer with records waiting whose position has not moved for this long
    # is stalled (reported, healed; see exchange.watchdog).
    exchange_stall_after_seconds: float = Field(default=5.0, gt=0, le=3600)
    # What the gateway's /ready requires besides itself: the /ready URLs of the engine and
    # the settlement workers. Unset: those of this host's engine and settlement metrics
    # ports (the layout of `exchange up`); empty: none.
    exchange_ready_urls: Annotated[tuple[str, ...] | None, NoDecode] = None

    # Access (issue #14). The first operator's Ed25519 public key (base64 of its 32 raw
    # bytes; key id `operator`); unset: `exchange up` generates a key pair and writes the
    # private key to $EXCHANGE_DATA_DIR/operator.key.
    exchange_operator_public_key: str | None = None
    # How far X-TIMESTAMP may be from the gateway's clock.
    exchange_auth_window_ms: int = Field(default=5_000, ge=1, le=3_600_000)
    # Per-key rate limits of traders (0 = none): order commands per second, requests per minute.
    exchange_rate_limit_orders_per_second: int = Field(default=50, ge=0, le=1_000_000)
    exchange_rate_limit_requests_per_minute: int = Field(default=6_000, ge=0, le=100_000_000)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # load_settings() hands over the environment explicitly, so tests control it fully.
        return (init_settings,)

    @field_validator("cassandra_contact_points", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            hosts = tuple(h.strip() for h in value.split(",") if h.strip())
            if not hosts:
                return None
            return hosts
        return value

    @field_validator("exchange_ready_urls", "exchange_dashboard_sources", mode="before")
    @classmethod
    def _split_urls(cls, value: object) -> object:
        if isinstance(value, str):
            urls = tuple(u.strip() for u in value.split(",") if u.strip())
            bad = [u for u in urls if not u.startswith(("http://", "https://"))]
            if bad:
                raise ValueError(f"not an http(s) URL: {bad[0]!r}")
            return urls
        return value

    @field_validator("exchange_operator_public_key", mode="before")
    @classmethod
    def _public_key(cls, value: object) -> object:
        if isinstance(value, str):
            if not value.strip():
                return None
            try:
                raw = base64.b64decode(value.strip(), validate=True)
            except (binascii.Error, ValueError):
                raw = b""
            if len(raw) != 32:
                raise ValueError("not the base64 of a 32-byte raw Ed25519 public key")
            return value.strip()
        return value

    @field_validator("kafka_bootstrap_servers", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @property
    def embedded_broker(self) -> bool:
        return self.kafka_bootstrap_servers is None

    @property
    def embedded_store(self) -> bool:
        return self.cassandra_contact_points is None

    @property
    def ready_urls(self) -> tuple[str, ...]:
        """The /ready URLs the gateway's /ready requires (see ``exchange_ready_urls``)."""
        if self.exchange_ready_urls is not None:
            return self.exchange_ready_urls
        host = "127.0.0.1" if self.exchange_host in ("0.0.0.0", "", "::") else self.exchange_host
        ports = (self.exchange_engine_metrics_port, self.exchange_settlement_metrics_port)
        return tuple(f"http://{host}:{port}/ready" for port in ports if port)


def _known_exchange_variables() -> set[str]:
    return {name.upper() for name in Settings.model_fields if name.startswith("exchange_")}


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from ``environ`` (default: the process environment).

    Unknown ``EXCHANGE_*`` variables are refused too: a typo must not silently fall back
    to a default.
    """
    env = dict(os.environ if environ is None else environ)
    known = _known_exchange_variables()
    for name in sorted(env):
        if name.startswith("EXCHANGE_") and name not in known:
            raise ConfigError(f"{name}: unknown setting (known: {', '.join(sorted(known))})")
    relevant = {k.lower(): v for k, v in env.items() if k.lower() in Settings.model_fields}
    try:
        return Settings.model_validate(relevant)
    except ValidationError as e:
        err = e.errors()[0]
        name = str(err["loc"][0]).upper() if err["loc"] else "settings"
        value = env.get(name, env.get(name.lower(), ""))
        raise ConfigError(f"{name}={value!r}: {err['msg']}") from e
