"""Database bootstrap (roles, database, grants) and per-module migrations run by dbmate."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

# Modules in dependency order: a module may reference only the modules before it.
MODULES: tuple[str, ...] = (
    "platform",
    "identity",
    "audit",
    "custom_fields",
    "specialists",
    "patients",
    "scheduling",
    "forms",
    "documents",
    "attachments",
    "webhooks",
    "segments",
    "gdpr",
    "broadcasts",
)

# Telemetry's own PostgreSQL database, migrated the same way from sql/telemetry/<module>.
TELEMETRY_MODULES: tuple[str, ...] = ("platform", "privacy", "events")
# Directories in sql/ beside core's modules: telemetry's database and ClickHouse.
SERVICE_DIRS = frozenset({"telemetry", "clickhouse"})

# Migrations grant table rights to this group role, never to a deployment's login role,
# so the SQL stays the same whatever the app role is called.
APP_ACCESS_ROLE = "carebase_app_access"
_VERSION = re.compile(r"^(\d+)_[^/]+\.sql$")


class MigrationError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Login:
    user: str
    password: str | None
    dbname: str

    @classmethod
    def from_url(cls, url: str) -> Login:
        parts = conninfo_to_dict(url)
        user, dbname = parts.get("user"), parts.get("dbname")
        if not user or not dbname:
            raise MigrationError(f"{_redact(url)}: the URL must name a user and a database")
        password = parts.get("password")
        return cls(user=str(user), password=str(password) if password else None, dbname=str(dbname))


def _redact(url: str) -> str:
    return re.sub(r"://([^:@/]+):[^@]*@", r"://\1:***@", url)


def _ensure_role(
    cur: psycopg.Cursor[object], role: str, attributes: str, password: str | None
) -> None:
    exists = cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    verb = "ALTER" if exists else "CREATE"
    statement = sql.SQL(f"{verb} ROLE {{}} {attributes}").format(sql.Identifier(role))
    if password is not None:
        statement += sql.SQL(" PASSWORD {}").format(sql.Literal(password))
    cur.execute(statement)


def bootstrap(*, superuser_url: str, admin_url: str, app_url: str) -> None:
    """Create (or bring up to date) the owner and app roles, the database and their grants.

    Idempotent: run it on every deploy. The owner bypasses row-level security (platform jobs);
    the app role is no superuser, has no BYPASSRLS, owns nothing, and reaches tables only
    through the grants migrations give to `carebase_app_access`.
    """
    owner, app = Login.from_url(admin_url), Login.from_url(app_url)
    if owner.user == app.user:
        raise MigrationError("the app role and the owner role must be different roles")
    if owner.dbname != app.dbname:
        raise MigrationError("DATABASE_URL and DATABASE_ADMIN_URL must name the same database")
    with psycopg.connect(superuser_url, autocommit=True) as conn, conn.cursor() as cur:
        _ensure_role(cur, owner.user, "LOGIN NOSUPERUSER NOCREATEROLE BYPASSRLS", owner.password)
        _ensure_role(
            cur,
            app.user,
            "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS INHERIT NOREPLICATION",
            app.password,
        )
        _ensure_role(cur, APP_ACCESS_ROLE, "NOLOGIN NOSUPERUSER NOBYPASSRLS", None)
        cur.execute(
            sql.SQL("GRANT {} TO {}").format(
                sql.Identifier(APP_ACCESS_ROLE), sql.Identifier(app.user)
            )
        )
        if not cur.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (owner.dbname,)
        ).fetchone():
            cur.execute(
                sql.SQL("CREATE DATABASE {} OWNER {} ENCODING 'UTF8' TEMPLATE template0").format(
                    sql.Identifier(owner.dbname), sql.Identifier(owner.user)
                )
            )
    with psycopg.connect(superuser_url, dbname=owner.dbname, autocommit=True) as conn:
        database, app_role = sql.Identifier(owner.dbname), sql.Identifier(app.user)
        conn.execute(
            sql.SQL("ALTER DATABASE {} OWNER TO {}").format(database, sql.Identifier(owner.user))
        )
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(database))
        conn.execute(
            sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(database, app_role)
        )
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")


def dbmate_url(url: str) -> str:
    """dbmate's URL dialect: a unix socket directory goes in `socket=`, not `host=`."""
    parts = conninfo_to_dict(url)
    host = str(parts.get("host") or "")
    user = quote(str(parts.get("user", "")), safe="")
    password = parts.get("password")
    credentials = user + (f":{quote(str(password), safe='')}" if password else "")
    query: dict[str, str] = {}
    if host.startswith("/"):
        netloc = f"{credentials}@"
        query["socket"] = host
        query["sslmode"] = "disable"
    else:
        port = parts.get("port")
        netloc = f"{credentials}@{host or 'localhost'}{f':{port}' if port else ''}"
        query["sslmode"] = str(parts.get("sslmode") or "prefer")
        if query["sslmode"] == "prefer":  # lib/pq knows no "prefer"
            query["sslmode"] = "disable" if host in ("localhost", "127.0.0.1", "::1") else "require"
    return f"postgres://{netloc}/{quote(str(parts['dbname']))}?{urlencode(query)}"


def _dbmate_binary() -> str:
    beside_python = Path(sys.executable).parent / "dbmate"
    found = str(beside_python) if beside_python.exists() else shutil.which("dbmate")
    if not found:
        raise MigrationError("dbmate not found: install the project with `make install`")
    return found


def _run(admin_url: str, migrations_dir: Path, module: str, *command: str) -> str:
    args = [
        _dbmate_binary(),
        "--no-dump-schema",
        "--migrations-dir",
        str(migrations_dir / module),
        "--migrations-table",
        f"{module}.schema_migrations",
        *command,
    ]
    env = {**os.environ, "DATABASE_URL": dbmate_url(admin_url)}
    # Arguments are our own paths and module names, never request input.
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip()
        raise MigrationError(f"dbmate {' '.join(command)} ({module}): {message}")
    return done.stdout


def check_modules(migrations_dir: Path, modules: tuple[str, ...] = MODULES) -> None:
    present = {p.name for p in migrations_dir.iterdir() if p.is_dir()} - SERVICE_DIRS
    if present != set(modules):
        raise MigrationError(
            f"{migrations_dir} has modules {sorted(present)} but the code lists "
            f"{list(modules)}: keep them equal"
        )


def up(admin_url: str, migrations_dir: Path, modules: tuple[str, ...] = MODULES) -> list[str]:
    check_modules(migrations_dir, modules)
    return [_run(admin_url, migrations_dir, module, "--migration-lock", "up") for module in modules]


def down(
    admin_url: str, migrations_dir: Path, module: str, modules: tuple[str, ...] = MODULES
) -> str:
    if module not in modules:
        raise MigrationError(f"unknown module {module!r}; modules: {', '.join(modules)}")
    return _run(admin_url, migrations_dir, module, "--migration-lock", "rollback")


def status(admin_url: str, migrations_dir: Path, modules: tuple[str, ...] = MODULES) -> str:
    check_modules(migrations_dir, modules)
    return "".join(
        f"== {module}\n{_run(admin_url, migrations_dir, module, 'status')}" for module in modules
    )


def expected_versions(
    migrations_dir: Path, modules: tuple[str, ...] = MODULES
) -> dict[str, set[str]]:
    """The versions each module's files declare (the digits before the first underscore)."""
    versions: dict[str, set[str]] = {}
    for module in modules:
        found = set()
        for path in sorted((migrations_dir / module).glob("*.sql")):
            match = _VERSION.match(path.name)
            if not match:
                raise MigrationError(f"{path}: migration files are named NNNN_name.sql")
            found.add(match.group(1))
        versions[module] = found
    return versions
