from __future__ import annotations

from pathlib import Path

import pytest

from carebase.config import PROJECT_ROOT
from carebase.operations import migrations


def test_socket_url_uses_dbmate_socket_parameter() -> None:
    url = migrations.dbmate_url("postgresql://owner:p%40ss@/carebase?host=/run/pg")
    assert url == "postgres://owner:p%40ss@/carebase?socket=%2Frun%2Fpg&sslmode=disable"


def test_tcp_url_keeps_host_port_and_sslmode() -> None:
    url = migrations.dbmate_url(
        "postgresql://owner:pw@db.internal:6432/carebase?sslmode=verify-full"
    )
    assert url == "postgres://owner:pw@db.internal:6432/carebase?sslmode=verify-full"


def test_remote_host_requires_tls_by_default() -> None:
    assert migrations.dbmate_url("postgresql://o:p@db.internal/c").endswith("sslmode=require")


def test_every_sql_module_is_listed_in_dependency_order() -> None:
    migrations.check_modules(PROJECT_ROOT / "sql")


def test_unlisted_module_is_refused(tmp_path: Path) -> None:
    (tmp_path / "platform").mkdir()
    (tmp_path / "rogue").mkdir()
    with pytest.raises(migrations.MigrationError, match="rogue"):
        migrations.check_modules(tmp_path)


def test_versions_come_from_file_names() -> None:
    versions = migrations.expected_versions(PROJECT_ROOT / "sql")
    assert "0001" in versions["platform"]


def test_every_migration_has_up_and_down() -> None:
    for path in (PROJECT_ROOT / "sql").glob("*/*.sql"):
        text = path.read_text()
        assert text.startswith("-- migrate:up"), path
        assert "\n-- migrate:down" in text, path


def test_login_requires_user_and_database() -> None:
    with pytest.raises(migrations.MigrationError):
        migrations.Login.from_url("postgresql:///carebase")
    login = migrations.Login.from_url("postgresql://app:secret@/carebase?host=/tmp")
    assert (login.user, login.password, login.dbname) == ("app", "secret", "carebase")
