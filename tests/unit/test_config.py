from __future__ import annotations

import pytest

from carebase.config import ConfigError, load_settings

SERVERS = {
    "DATABASE_URL": "postgresql://app:pw@db/carebase",
    "DATABASE_ADMIN_URL": "postgresql://owner:pw@db/carebase",
    "REDIS_URL": "redis://redis:6379/0",
}


def test_defaults_with_servers() -> None:
    settings = load_settings(SERVERS)
    assert settings.core_port == 9000
    assert settings.validate_responses is False
    assert settings.max_body_bytes == 1024 * 1024


def test_every_problem_is_named_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(
            {
                "CORE_PORT": "ninety",
                "DATABASE_URL": "mysql://nope",
                "LOG_LEVEL": "loud",
                "DB_POOL_MAX_SIZE": "0",
            }
        )
    message = str(caught.value)
    for name in ("CORE_PORT", "DATABASE_URL", "LOG_LEVEL", "DB_POOL_MAX_SIZE"):
        assert name in message
    assert "4 problem(s)" in message


def test_missing_servers_are_listed() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"REDIS_URL": "redis://r"})
    assert "DATABASE_URL: required" in str(caught.value)
    assert "DATABASE_ADMIN_URL: required" in str(caught.value)
    assert "REDIS_URL" not in str(caught.value)


def test_dev_needs_no_servers() -> None:
    assert load_settings({}, require=()).database_url is None


def test_pool_bounds_are_consistent() -> None:
    with pytest.raises(ConfigError, match="DB_POOL_MIN_SIZE"):
        load_settings({**SERVERS, "DB_POOL_MIN_SIZE": "20", "DB_POOL_MAX_SIZE": "5"})


def test_process_environment_is_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORE_PORT", "1234")
    assert load_settings(SERVERS).core_port == 9000


def test_server_urls_refuses_missing() -> None:
    with pytest.raises(ConfigError, match="REDIS_URL: required"):
        load_settings({}, require=()).server_urls()


def test_production_needs_shared_signing_keys() -> None:
    with pytest.raises(ConfigError, match="JWT_SIGNING_KEYS"):
        load_settings({**SERVERS, "ENVIRONMENT": "production"})
    keys = '[{"kid": "k", "private_key": "-", "created_at": 1}]'
    production = {
        **SERVERS,
        "ENVIRONMENT": "production",
        "SMTP_HOST": "smtp.example.com",
        "DATA_ENCRYPTION_KEYS": "{}",
    }
    assert load_settings({**production, "JWT_SIGNING_KEYS": keys})


def test_production_needs_shared_data_keys() -> None:
    with pytest.raises(ConfigError, match="DATA_ENCRYPTION_KEYS"):
        load_settings(
            {
                **SERVERS,
                "ENVIRONMENT": "production",
                "SMTP_HOST": "smtp.example.com",
                "JWT_SIGNING_KEYS": "[]",
            }
        )


def test_production_needs_a_mail_server() -> None:
    with pytest.raises(ConfigError, match="SMTP_HOST"):
        load_settings({**SERVERS, "ENVIRONMENT": "production", "JWT_SIGNING_KEYS": "[]"})


def test_an_external_identity_provider_needs_issuer_and_audience() -> None:
    with pytest.raises(ConfigError, match="AUTH_ISSUER, AUTH_AUDIENCE"):
        load_settings({**SERVERS, "AUTH_JWKS_URL": "https://idp.example.com/jwks"})


def test_a_video_provider_needs_its_credentials() -> None:
    with pytest.raises(ConfigError, match="DAILY_API_KEY"):
        load_settings({**SERVERS, "VIDEO_PROVIDER": "daily"})
    with pytest.raises(ConfigError, match="JITSI_APP_SECRET"):
        load_settings({**SERVERS, "VIDEO_PROVIDER": "jitsi", "JITSI_APP_ID": "carebase"})
    assert load_settings({**SERVERS, "VIDEO_PROVIDER": "daily", "DAILY_API_KEY": "k" * 64})


@pytest.mark.parametrize(
    "origins",
    [
        "*",
        "https://app.example.com/",
        "https://app.example.com/path",
        "app.example.com",
        "https://App.example.com",
        "ftp://app.example.com",
        "https://user@app.example.com",
    ],
)
def test_cors_takes_exact_origins_only(origins: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({**SERVERS, "CORS_ALLOWED_ORIGINS": origins})
    assert "CORS_ALLOWED_ORIGINS" in str(caught.value)


def test_cors_origins_are_a_comma_separated_list() -> None:
    settings = load_settings(
        {**SERVERS, "CORS_ALLOWED_ORIGINS": "https://app.example.com, http://localhost:5173"}
    )
    assert settings.cors_origins == {"https://app.example.com", "http://localhost:5173"}
    assert load_settings(SERVERS).cors_origins == frozenset()


def test_a_metrics_port_may_not_be_a_public_one() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({**SERVERS, "METRICS_PORT": "9000"})
    assert "METRICS_PORT: must not be" in str(caught.value)
