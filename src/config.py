"""Settings read from the environment, checked once at start-up."""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class LogFormat(StrEnum):
    JSON = "json"
    CONSOLE = "console"


class VideoProvider(StrEnum):
    LOCAL = "local"
    DAILY = "daily"
    JITSI = "jitsi"


class MessagingProvider(StrEnum):
    OUTBOX = "outbox"
    HTTP = "http"


class ConfigError(Exception):
    """The environment does not describe a runnable service; the message names every problem."""


@dataclass(frozen=True, slots=True)
class ServerUrls:
    database: str
    database_admin: str
    redis: str


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=None, extra="ignore", case_sensitive=False, frozen=True
    )

    environment: Environment = Environment.DEVELOPMENT
    host: str = "127.0.0.1"
    core_port: Annotated[int, Field(ge=1, le=65535)] = 9000
    telemetry_port: Annotated[int, Field(ge=1, le=65535)] = 4000
    data_dir: Path = PROJECT_ROOT / ".data"

    database_url: str | None = None
    """The application role: no ownership, no BYPASSRLS; every query runs under RLS."""
    database_admin_url: str | None = None
    """The owner role: migrations, superadmin and system jobs only."""
    database_read_url: str | None = None
    """A streaming replica of DATABASE_URL's database (same roles): read-only transactions go
    there, except in a request that has written; down or lagging, reads use the primary."""
    database_read_max_lag_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    """A replica further behind than this (replay lag, checked every 5 s) is not read from."""
    database_superuser_url: str | None = None
    """Only `carebase db bootstrap` uses it: creates roles, the database and grants."""
    redis_url: str | None = None

    jwt_issuer: Annotated[str, Field(min_length=1, max_length=256)] = "carebase"
    jwt_audience: Annotated[str, Field(min_length=1, max_length=256)] = "carebase-api"
    access_token_ttl_s: Annotated[int, Field(ge=60, le=3600)] = 900
    jwt_signing_keys: str | None = None
    """The keyring as JSON (see `carebase keys rotate`); without it, <DATA_DIR>/jwt-keys.json."""
    data_encryption_keys: str | None = None
    """The AES-256-GCM data keyring as JSON (`carebase keys rotate-data`); without it,
    <DATA_DIR>/data-keys.json."""
    impersonation_ttl_s: Annotated[int, Field(ge=60, le=3600)] = 900
    idempotency_ttl_s: Annotated[int, Field(ge=60, le=7 * 86_400)] = 86_400

    refresh_token_ttl_s: Annotated[int, Field(ge=3600, le=90 * 86_400)] = 30 * 86_400
    password_hash_time_cost: Annotated[int, Field(ge=1, le=10)] = 3
    password_hash_memory_kib: Annotated[int, Field(ge=8, le=1_048_576)] = 65_536
    """Argon2id cost; the defaults are RFC 9106's second recommendation. Tests lower them."""
    login_max_failures: Annotated[int, Field(ge=1, le=100)] = 5
    login_lockout_s: Annotated[int, Field(ge=1, le=86_400)] = 60
    """First lockout after LOGIN_MAX_FAILURES; each further failure doubles it (up to an hour)."""
    auth_cache_s: Annotated[float, Field(ge=0, le=300)] = 30.0
    """How long a process trusts a membership role or an API key it has read (revocation delay)."""
    auth_jwks_url: str | None = None
    """An external identity provider's JWKS; its tokens are accepted next to Carebase's own."""
    auth_issuer: str | None = None
    auth_audience: str | None = None
    trusted_proxies: str = ""
    """Comma-separated proxy addresses whose X-Forwarded-For is believed (client IP for limits)."""

    cors_allowed_origins: str = ""
    """Comma-separated origins (`https://app.example.com`) whose browsers may call the API with
    credentials; exact matches only, never `*`. Empty: no cross-origin access."""

    public_base_url: str = "http://localhost:9000"
    """Where clients reach this API (calendar subscription URLs point here)."""
    app_base_url: str = "http://localhost:3000"
    """The web app that opens mailed links (/verify-email?token=…, /reset-password?token=…)."""
    mail_from: str = "Carebase <no-reply@carebase.localhost>"
    smtp_host: str | None = None
    """Without it, development mail goes to the log and <DATA_DIR>/mailbox/; production needs it."""
    smtp_port: Annotated[int, Field(ge=1, le=65535)] = 587
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = True
    smtp_timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0

    video_provider: VideoProvider = VideoProvider.LOCAL
    """Who hosts video rooms: `local` (development: a URL, no network), `daily`, `jitsi`."""
    video_local_base_url: str = "http://localhost:3000/rooms"
    daily_api_key: str | None = None
    daily_api_url: str = "https://api.daily.co/v1"
    daily_domain_id: str | None = None
    """Daily's domain id for self-signed meeting tokens; read from Daily when unset."""
    daily_timeout_s: Annotated[float, Field(gt=0, le=60)] = 10.0
    jitsi_app_id: str | None = None
    jitsi_app_secret: str | None = None
    jitsi_base_url: str | None = None
    blob_store_url: str | None = None
    """Where attachments are kept: `s3://bucket?region=…&endpoint_url=…` (credentials from the
    AWS environment), or `file:///abs/dir`; unset, <DATA_DIR>/blobs."""
    blob_signing_key: str | None = None
    """The HMAC key of the filesystem store's upload and download URLs (≥ 32 characters);
    without it, <DATA_DIR>/blob-signing-key, generated on first run."""
    blob_url_ttl_s: Annotated[int, Field(ge=10, le=300)] = 300
    """How long an upload or download URL works."""
    run_workers: bool = True
    """Run the background work (mail relay, scheduling worker, blob worker, housekeeping)
    inside each API process. Set false when `carebase worker` runs beside the API (as
    `make dev` does); the API never delivers anything in a request either way."""
    blob_reaper: bool = True
    """Run the blob store's outbox worker (deleting removed attachments' objects) inside each
    API process; tests turn it off and drive it step by step."""
    scheduling_worker: bool = True
    """Run the scheduling worker (video rooms, reminders) inside each API process; tests turn it
    off and drive it step by step."""

    webhook_trusted_hosts: str = ""
    """Comma-separated host names webhook endpoints may use although they resolve to
    non-public addresses or use other ports (receivers inside your own network). Each name is
    a deliberate hole in the SSRF guard; `localhost` in development when unset."""
    webhook_allowed_ports: str = "443,80,8443"
    """The ports webhook URLs may name (trusted hosts may use any)."""
    webhook_secret_overlap_s: Annotated[int, Field(ge=0, le=7 * 86_400)] = 86_400
    """After a secret rotation, how long the previous secret still signs deliveries."""
    webhooks_worker: bool = True
    """Dispatch events to webhook endpoints and send the deliveries wherever the background
    work runs; tests turn it off and drive it step by step."""
    segments_worker: bool = True
    """Re-evaluate dynamic segments wherever the background work runs; tests turn it off and
    drive it step by step."""
    gdpr_worker: bool = True
    """Carry out approved data-subject requests wherever the background work runs; tests turn it
    off and drive it step by step."""
    segment_refresh_s: Annotated[int, Field(ge=60, le=7 * 86_400)] = 900
    """How old a dynamic segment's evaluation may grow before the worker evaluates it again."""
    segment_evaluation_timeout_ms: Annotated[int, Field(ge=1_000, le=600_000)] = 30_000
    """The statement timeout of one segment evaluation (beyond it: 503, nothing changed)."""
    broadcasts_worker: bool = True
    """Run recipient imports and send campaigns wherever the background work runs; tests turn
    it off and drive it step by step."""
    broadcast_rate_per_organization: Annotated[int, Field(ge=1, le=10_000)] = 20
    """Broadcast messages one organization may send per second (across workers, in Redis)."""
    broadcast_rate_per_provider: Annotated[int, Field(ge=1, le=100_000)] = 50
    """Broadcast messages per second to each provider, all organizations together."""
    messaging_provider: MessagingProvider = MessagingProvider.OUTBOX
    """Where SMS and WhatsApp broadcasts go: `outbox` (development: files under
    <DATA_DIR>/outbox) or `http` (a Twilio-shaped REST API). E-mail uses the SMTP settings."""
    messaging_base_url: str = "https://api.twilio.com"
    messaging_account_id: str | None = None
    messaging_auth_token: str | None = None
    messaging_from_sms: str | None = None
    """The sender number for SMS (E.164)."""
    messaging_from_whatsapp: str | None = None
    """The WhatsApp sender number (E.164, without the `whatsapp:` prefix)."""
    messaging_status_callback_url: str | None = None
    """Sent to the provider as each message's `StatusCallback`, when set."""
    messaging_webhook_secret: str | None = None
    """The `whsec_…` secret the provider signs delivery receipts with (Standard Webhooks);
    unset, every receipt is refused."""
    telemetry_internal_url: str | None = None
    """Telemetry's base URL for core's relay (`…/v1/audit/events`); unset, events are not
    forwarded."""
    telemetry_service_token: str | None = None
    """The service credential core presents to telemetry's ingest (Bearer), and telemetry
    accepts; at least 32 characters."""

    telemetry_database_url: str | None = None
    """Telemetry's own PostgreSQL database, app role (consents, security events, audit)."""
    telemetry_database_admin_url: str | None = None
    """Telemetry's database, owner role (its migrations and system jobs)."""
    clickhouse_url: str | None = None
    """A ClickHouse server (`http(s)://user:password@host:8123`); unset, the embedded engine
    (chdb) under <DATA_DIR>/clickhouse, which one process alone may open."""
    telemetry_flush_interval_s: Annotated[float, Field(gt=0, le=1.0)] = 1.0
    """The ingest buffer is written to ClickHouse at least this often…"""
    telemetry_flush_rows: Annotated[int, Field(ge=1, le=1_000_000)] = 20_000
    """…or as soon as it holds this many rows (one INSERT per table per flush)."""
    telemetry_buffer_rows: Annotated[int, Field(ge=1, le=10_000_000)] = 200_000
    """Past this many unwritten rows, ingest answers 503 with Retry-After."""
    telemetry_retention_analytics_days: Annotated[int, Field(ge=1, le=36_500)] = 730
    """How long ClickHouse keeps analytics events (TTL)."""
    telemetry_retention_media_days: Annotated[int, Field(ge=1, le=36_500)] = 730
    """…video-session events and bandwidth samples."""
    telemetry_retention_pose_frames_days: Annotated[int, Field(ge=1, le=36_500)] = 183
    """…raw pose frames."""
    telemetry_retention_aggregates_days: Annotated[int, Field(ge=1, le=36_500)] = 2555
    """…pose aggregates and the other dashboard aggregates (per day and per session)."""
    telemetry_retention_audit_days: Annotated[int, Field(ge=1, le=36_500)] = 2190
    """…audit events and the staff activity drawn from them."""
    telemetry_privacy_refresh_s: Annotated[float, Field(gt=0, le=60)] = 30.0
    """How long ingest trusts the consent and exclusion state it read (withdrawal delay)."""

    rate_limit_default_limit: Annotated[int, Field(ge=1, le=1_000_000)] = 600
    rate_limit_default_window_s: Annotated[int, Field(ge=1, le=86_400)] = 60

    db_pool_min_size: Annotated[int, Field(ge=0, le=1000)] = 2
    db_pool_max_size: Annotated[int, Field(ge=1, le=1000)] = 10
    db_admin_pool_max_size: Annotated[int, Field(ge=1, le=100)] = 5
    db_statement_timeout_ms: Annotated[int, Field(ge=100, le=600_000)] = 5_000
    db_connect_timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0
    redis_timeout_ms: Annotated[int, Field(ge=10, le=10_000)] = 250
    redis_max_connections: Annotated[int, Field(ge=1, le=10_000)] = 64

    max_body_bytes: Annotated[int, Field(ge=1024, le=100 * 1024 * 1024)] = 1024 * 1024
    validate_responses: bool = False
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    graceful_shutdown_s: Annotated[int, Field(ge=0, le=300)] = 20

    log_level: str = "info"
    log_format: LogFormat = LogFormat.JSON

    metrics_host: str = "127.0.0.1"
    """Where `/metrics` listens (Prometheus text); never the public port."""
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 9190
    """`carebase serve core`'s metrics listener; 0 turns it off."""
    telemetry_metrics_port: Annotated[int, Field(ge=0, le=65535)] = 9191
    """`carebase serve telemetry`'s metrics listener; 0 turns it off."""
    worker_metrics_port: Annotated[int, Field(ge=0, le=65535)] = 9192
    """`carebase worker`'s metrics listener; 0 turns it off."""

    migrations_dir: Path = PROJECT_ROOT / "sql"

    @property
    def retention_days(self) -> dict[str, int]:
        """Each retention group's days, by the name `clickhouse_migrations.RETENTION` uses."""
        return {
            "analytics": self.telemetry_retention_analytics_days,
            "media": self.telemetry_retention_media_days,
            "pose_frames": self.telemetry_retention_pose_frames_days,
            "aggregates": self.telemetry_retention_aggregates_days,
            "audit": self.telemetry_retention_audit_days,
        }

    @property
    def mailbox_dir(self) -> Path:
        return self.data_dir / "mailbox"

    @property
    def webhook_trusted_host_names(self) -> frozenset[str]:
        given = {name.strip().lower() for name in self.webhook_trusted_hosts.split(",")}
        names = frozenset(name for name in given if name)
        if not names and self.environment == Environment.DEVELOPMENT:
            return frozenset({"localhost"})
        return names

    @property
    def webhook_ports(self) -> frozenset[int]:
        return frozenset(
            int(port) for port in self.webhook_allowed_ports.split(",") if port.strip()
        )

    @property
    def cors_origins(self) -> frozenset[str]:
        return frozenset(o.strip() for o in self.cors_allowed_origins.split(",") if o.strip())

    @field_validator("cors_allowed_origins")
    @classmethod
    def _cors_allowed_origins(cls, value: str) -> str:
        for origin in (o.strip() for o in value.split(",") if o.strip()):
            if origin == "*":
                raise ValueError("exact origins only: a wildcard would share credentials")
            parts = urlsplit(origin)
            if (
                parts.scheme not in ("http", "https")
                or not parts.hostname
                or parts.path
                or parts.query
                or parts.fragment
                or parts.username
                or origin != origin.lower()
            ):
                raise ValueError(
                    f"{origin!r} is not an origin: scheme://host[:port] in lower case, no path"
                )
        return value

    @field_validator("webhook_allowed_ports")
    @classmethod
    def _webhook_allowed_ports(cls, value: str) -> str:
        ports = [part.strip() for part in value.split(",") if part.strip()]
        if not ports or not all(p.isdigit() and 1 <= int(p) <= 65535 for p in ports):
            raise ValueError("a comma-separated list of ports (1–65535)")
        return value

    @field_validator("clickhouse_url")
    @classmethod
    def _clickhouse_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s):// URL of a ClickHouse server")
        return value

    @field_validator("telemetry_service_token")
    @classmethod
    def _service_token(cls, value: str | None) -> str | None:
        if value is not None and len(value) < 32:
            raise ValueError("needs at least 32 characters")
        return value

    @field_validator("telemetry_internal_url")
    @classmethod
    def _telemetry_internal_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s):// URL")
        return value.rstrip("/") if value else value

    @field_validator("blob_store_url")
    @classmethod
    def _blob_store_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("s3://", "file:///")):
            raise ValueError("BLOB_STORE_URL is s3://bucket?… or file:///absolute/dir")
        return value

    @field_validator("blob_signing_key")
    @classmethod
    def _blob_signing_key(cls, value: str | None) -> str | None:
        if value is not None and len(value) < 32:
            raise ValueError("BLOB_SIGNING_KEY needs at least 32 characters")
        return value

    @field_validator("messaging_webhook_secret")
    @classmethod
    def _messaging_webhook_secret(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            key = base64.b64decode(value.removeprefix("whsec_"), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) < 24:
            raise ValueError("a whsec_ secret: base64 of at least 24 random bytes")
        return value

    def telemetry_urls(self) -> ServerUrls:
        """Telemetry's database (app and owner roles) and Redis, or a `ConfigError`."""
        missing = [
            name.upper() for name in TELEMETRY_SERVER_SETTINGS if getattr(self, name) is None
        ]
        if missing or not (
            self.telemetry_database_url and self.telemetry_database_admin_url and self.redis_url
        ):
            raise ConfigError(_message([f"{name}: required" for name in missing]))
        return ServerUrls(
            self.telemetry_database_url, self.telemetry_database_admin_url, self.redis_url
        )

    def server_urls(self) -> ServerUrls:
        """The three server URLs, or a `ConfigError` naming each one that is missing."""
        missing = [name.upper() for name in SERVER_SETTINGS if getattr(self, name) is None]
        if missing or not (self.database_url and self.database_admin_url and self.redis_url):
            raise ConfigError(_message([f"{name}: required" for name in missing]))
        return ServerUrls(self.database_url, self.database_admin_url, self.redis_url)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # load_settings() reads the mapping it is given, so tests never leak the process's env.
        return (init_settings,)

    @field_validator(
        "database_url",
        "database_admin_url",
        "database_superuser_url",
        "database_read_url",
        "telemetry_database_url",
        "telemetry_database_admin_url",
    )
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgres://", "postgresql://")):
            raise ValueError("must be a postgresql:// URL")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        if value.lower() not in {"debug", "info", "warning", "error"}:
            raise ValueError("must be one of debug, info, warning, error")
        return value.lower()


SERVER_SETTINGS = ("database_url", "database_admin_url", "redis_url")
TELEMETRY_SERVER_SETTINGS = ("telemetry_database_url", "telemetry_database_admin_url", "redis_url")


def load_settings(
    environ: Mapping[str, str] | None = None,
    *,
    require: tuple[str, ...] = SERVER_SETTINGS,
    **overrides: object,
) -> Settings:
    """Read settings, naming every missing or invalid variable in one `ConfigError`."""
    env = os.environ if environ is None else environ
    problems: list[str] = []
    try:
        settings = _from(env, overrides)
    except ValidationError as exc:
        for error in exc.errors():
            name = str(error["loc"][0]).upper() if error["loc"] else "?"
            problems.append(f"{name}: {error['msg']}")
        raise ConfigError(_message(problems)) from None
    for name in require:
        if getattr(settings, name) is None:
            problems.append(f"{name.upper()}: required")
    if settings.environment == Environment.PRODUCTION and not settings.jwt_signing_keys:
        problems.append("JWT_SIGNING_KEYS: required in production (every process must share keys)")
    if settings.environment == Environment.PRODUCTION and not settings.data_encryption_keys:
        problems.append(
            "DATA_ENCRYPTION_KEYS: required in production (every process must share keys)"
        )
    if settings.environment == Environment.PRODUCTION and not settings.smtp_host:
        problems.append("SMTP_HOST: required in production (verification and reset mail)")
    if settings.auth_jwks_url and not (settings.auth_issuer and settings.auth_audience):
        problems.append("AUTH_ISSUER, AUTH_AUDIENCE: required with AUTH_JWKS_URL")
    if settings.video_provider == VideoProvider.DAILY and not settings.daily_api_key:
        problems.append("DAILY_API_KEY: required with VIDEO_PROVIDER=daily")
    if settings.video_provider == VideoProvider.JITSI and not (
        settings.jitsi_app_id and settings.jitsi_app_secret and settings.jitsi_base_url
    ):
        problems.append(
            "JITSI_APP_ID, JITSI_APP_SECRET, JITSI_BASE_URL: required with VIDEO_PROVIDER=jitsi"
        )
    problems += _pairing_problems(settings)
    if problems:
        raise ConfigError(_message(problems))
    return settings


def _pairing_problems(settings: Settings) -> list[str]:
    """Settings that only make sense together."""
    problems = []
    if settings.telemetry_internal_url and not settings.telemetry_service_token:
        problems.append("TELEMETRY_SERVICE_TOKEN: required with TELEMETRY_INTERNAL_URL")
    public = {settings.core_port, settings.telemetry_port}
    for name in ("metrics_port", "telemetry_metrics_port", "worker_metrics_port"):
        if getattr(settings, name) in public:
            problems.append(
                f"{name.upper()}: must not be a public port (CORE_PORT, TELEMETRY_PORT)"
            )
    if settings.db_pool_min_size > settings.db_pool_max_size:
        problems.append("DB_POOL_MIN_SIZE: must not exceed DB_POOL_MAX_SIZE")
    if settings.messaging_provider == MessagingProvider.HTTP:
        problems += [
            f"{name.upper()}: required with MESSAGING_PROVIDER=http"
            for name in ("messaging_account_id", "messaging_auth_token")
            if not getattr(settings, name)
        ]
        if not (settings.messaging_from_sms or settings.messaging_from_whatsapp):
            problems.append(
                "MESSAGING_FROM_SMS or MESSAGING_FROM_WHATSAPP:"
                " required with MESSAGING_PROVIDER=http"
            )
    return problems


def _from(env: Mapping[str, str], overrides: Mapping[str, object]) -> Settings:
    fields = Settings.model_fields
    values: dict[str, object] = {name: env[name.upper()] for name in fields if name.upper() in env}
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def _message(problems: list[str]) -> str:
    lines = "\n".join(f"  - {problem}" for problem in problems)
    return f"invalid configuration ({len(problems)} problem(s)):\n{lines}"
