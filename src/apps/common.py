"""What every service's composition root builds the same way: pools, Redis, keyrings, mail."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from carebase.config import Settings
from carebase.integrations.mail import MailboxSender, MailSender, SmtpSender
from carebase.integrations.redis_pipe import RedisPipe
from carebase.persistence.db import Database
from carebase.persistence.pools import make_pool
from carebase.security.encryption import Sealer, load_data_keyring
from carebase.security.tokens import TokenService, load_keyring


@dataclass(frozen=True)
class Dependencies:
    """What the services need from outside; tests override fields with `create_app(overrides=)`."""

    database: Database
    redis: Redis
    redis_pipe: RedisPipe
    """The one pipelined connection per process for calls on every request (rate limits)."""
    tokens: TokenService
    mail: MailSender
    sealer: Sealer


def build_database(settings: Settings, *, service: str) -> Database:
    urls = settings.server_urls()
    common = {
        "application_name": f"carebase-{service}",
        "statement_timeout_ms": settings.db_statement_timeout_ms,
        "connect_timeout_s": settings.db_connect_timeout_s,
    }
    return Database(
        make_pool(
            urls.database,
            name=f"{service}-app",
            min_size=settings.db_pool_min_size,
            max_size=settings.db_pool_max_size,
            **common,  # type: ignore[arg-type]
        ),
        make_pool(
            urls.database_admin,
            name=f"{service}-admin",
            min_size=0,
            max_size=settings.db_admin_pool_max_size,
            **common,  # type: ignore[arg-type]
        ),
    )


def build_redis(settings: Settings) -> Redis:
    timeout = settings.redis_timeout_ms / 1000
    # redis-py retries with backoff by default, stalling a request for seconds when Redis is
    # down (GROUND.md); each caller chooses to fail open or closed instead.
    # A blocking pool: past max_connections callers wait (up to the timeout) for a
    # connection instead of failing at once with MaxConnectionsError under bursts.
    pool = BlockingConnectionPool.from_url(
        settings.server_urls().redis,
        max_connections=settings.redis_max_connections,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), retries=0),
        health_check_interval=30,
    )
    return Redis.from_pool(pool)  # owns the pool, so aclose() closes its connections


def build_tokens(settings: Settings) -> TokenService:
    path = keyring_path(settings)
    keyring = load_keyring(
        path, token_ttl_s=settings.access_token_ttl_s, from_env=settings.jwt_signing_keys
    )
    return TokenService(
        keyring,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        # From the environment, keys change with a rolling restart; a file is re-read.
        reload_from=None if settings.jwt_signing_keys else path,
    )


def build_sealer(settings: Settings) -> Sealer:
    path = data_keyring_path(settings)
    keyring = load_data_keyring(path, from_env=settings.data_encryption_keys)
    # From the environment, keys change with a rolling restart; a file is re-read.
    return Sealer(keyring, reload_from=None if settings.data_encryption_keys else path)


def data_keyring_path(settings: Settings) -> Path:
    return settings.data_dir / "data-keys.json"


def build_mail(settings: Settings) -> MailSender:
    if settings.smtp_host:
        return SmtpSender(
            host=settings.smtp_host,
            port=settings.smtp_port,
            sender=settings.mail_from,
            username=settings.smtp_username,
            password=settings.smtp_password,
            starttls=settings.smtp_starttls,
            timeout_s=settings.smtp_timeout_s,
        )
    # load_settings() refuses production without SMTP_HOST.
    return MailboxSender(settings.mailbox_dir, sender=settings.mail_from)


def keyring_path(settings: Settings) -> Path:
    return settings.data_dir / "jwt-keys.json"


def dependencies(
    settings: Settings, overrides: Mapping[str, Any], *, service: str = "core"
) -> Dependencies:
    """Each dependency from `overrides` when given, otherwise built from the settings."""
    builders: dict[str, Callable[[], Any]] = {
        "database": lambda: build_database(settings, service=service),
        "redis": lambda: build_redis(settings),
        "redis_pipe": lambda: RedisPipe(
            settings.server_urls().redis, timeout_s=settings.redis_timeout_ms / 1000
        ),
        "tokens": lambda: build_tokens(settings),
        "mail": lambda: build_mail(settings),
        "sealer": lambda: build_sealer(settings),
    }
    unknown = set(overrides) - set(builders)
    if unknown:
        raise TypeError(f"unknown overrides: {sorted(unknown)}")
    return Dependencies(
        **{
            name: overrides[name] if name in overrides else build()
            for name, build in builders.items()
        }
    )
