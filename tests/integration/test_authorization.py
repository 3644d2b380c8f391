"""Who may do what, and that no tenant reaches another — both generated from the contract.

- Role matrix: every operation × every role answers 403 exactly when the role lacks the
  operation's `x-permission`.
- Cross-tenant sweep: for every path with an id, tenant A using tenant B's id gets a 404
  identical in shape to a random id's, and nothing of B changes.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
import pytest
from support import Person

from carebase.apps.core import CoreApp
from carebase.operations import migrations
from carebase.principal import Principal
from carebase.security import permissions
from carebase.web.contract import Contract, Operation

pytestmark = pytest.mark.integration

CONTRACT = Contract.for_service("core")
PROTECTED = sorted(
    (op for op in CONTRACT.operations.values() if not op.public), key=lambda op: op.operation_id
)
# The blob store's signed URLs (`security: []`) name no tenant's row without a signature the
# API made for that very object: test_attachments.py tries altered and foreign ones.
WITH_IDS = sorted(
    (op for op in CONTRACT.operations.values() if "{" in op.path and not op.public),
    key=lambda op: op.operation_id,
)
ROLES = ("admin", "specialist", "staff", "patient", "superadmin", "none")


def _principal(role: str) -> Principal:
    if role == "superadmin":
        return Principal(user_id=uuid.uuid4(), organization_id=None, role=None, is_superadmin=True)
    if role == "none":
        return Principal(user_id=uuid.uuid4(), organization_id=None, role=None)
    return Principal(user_id=uuid.uuid4(), organization_id=uuid.uuid4(), role=role)


def _example_body(op: Operation) -> Any:
    """The contract's own example body: valid, so what answers is the handler, not validation."""
    spec = CONTRACT.document["paths"][op.path][op.method.lower()]
    content = spec.get("requestBody", {}).get("content", {}).get("application/json")
    return None if content is None else content.get("example", {})


def _example_query(op: Operation) -> dict[str, Any]:
    """The contract's examples of the required query parameters (valid, like the body)."""
    spec = CONTRACT.document["paths"][op.path][op.method.lower()]
    return {
        p["name"]: p["example"]
        for p in spec.get("parameters", ())
        if p.get("in") == "query" and p.get("required") and "example" in p
    }


def _request(
    client: httpx.AsyncClient, op: Operation, params: dict[str, str], headers: dict[str, str]
) -> Any:
    path = re.sub(r"\{(\w+)\}", lambda m: params[m.group(1)], op.path)
    return client.request(
        op.method,
        path,
        params=_example_query(op),
        headers={**headers, "If-Match": '"1"'},
        json=_example_body(op),
    )


@pytest.fixture
def caller(
    person: Callable[..., Person], new_org: Callable[..., uuid.UUID]
) -> Callable[[str], Person]:
    def make(role: str) -> Person:
        if role == "superadmin":
            return person(superadmin=True)
        if role == "none":
            return person()
        return person(new_org(), role)

    return make


@pytest.mark.parametrize("role", ROLES)
async def test_role_matrix(
    client: httpx.AsyncClient, caller: Callable[[str], Person], role: str
) -> None:
    me = caller(role)
    allowed = permissions.permissions_of(_principal(role))
    own_ids = {
        "organization_id": str(me.organization_id or uuid.uuid4()),
        "user_id": str(uuid.uuid4()),
        "api_key_id": str(uuid.uuid4()),
        "slug": "no-such-clinic",
        **{name: str(uuid.uuid4()) for name in NEW_IDS},
        **_random_texts(),
    }
    mismatches = []
    for op in PROTECTED:
        answer = await _request(client, op, own_ids, me.auth)
        expected_forbidden = op.permission not in allowed
        if (answer.status_code == 403) != expected_forbidden or answer.status_code >= 500:
            mismatches.append(f"{op.operation_id} ({op.permission}): {answer.status_code}")
    assert mismatches == [], f"{role}: {mismatches}"


def test_every_declared_permission_is_known() -> None:
    unknown = {op.permission for op in PROTECTED} - permissions.KNOWN
    assert unknown == set()


@pytest.fixture
def two_tenants(
    person: Callable[..., Person],
    new_org: Callable[..., uuid.UUID],
    admin_conn: psycopg.Connection[tuple[object, ...]],
) -> tuple[Person, dict[str, str]]:
    """An admin of A, and the ids of B's resources, one for each path parameter."""
    a_admin = person(new_org("A"), "admin")
    b = new_org("B")
    b_member = person(b, "staff")
    row = admin_conn.execute(
        "INSERT INTO identity.api_keys (organization_id, name, prefix, secret_hash, role)"
        " VALUES (%s, 'B key', %s, '\\x00', 'staff') RETURNING id",
        (b, uuid.uuid4().hex[:12]),
    ).fetchone()
    assert row is not None
    b_slug = admin_conn.execute(
        "SELECT slug FROM platform.organizations WHERE id = %s", (b,)
    ).fetchone()
    assert b_slug is not None
    ids = {
        "organization_id": str(b),
        "user_id": str(b_member.user_id),
        "api_key_id": str(row[0]),
        "slug": str(b_slug[0]),
        **_clinical_rows(admin_conn, b, b_member.user_id),
    }
    return a_admin, ids


def _clinical_rows(
    conn: psycopg.Connection[tuple[object, ...]], org: uuid.UUID, member: uuid.UUID
) -> dict[str, str]:
    """One patient, specialty, specialist and custom field of `org`."""
    ids = {name: str(uuid.uuid4()) for name in NEW_IDS}
    conn.execute(
        "INSERT INTO patients.patients (organization_id, id, given_name, family_name)"
        " VALUES (%s, %s, 'Other', 'Tenant')",
        (org, ids["patient_id"]),
    )
    conn.execute(
        "INSERT INTO specialists.specialties (organization_id, id, name) VALUES (%s, %s, 'B')",
        (org, ids["specialty_id"]),
    )
    conn.execute(
        "INSERT INTO specialists.specialists (organization_id, id, user_id, display_name)"
        " VALUES (%s, %s, %s, 'B specialist')",
        (org, ids["specialist_id"], member),
    )
    conn.execute(
        "INSERT INTO custom_fields.fields (organization_id, id, entity_type, key)"
        " VALUES (%s, %s, 'patient', 'b_field')",
        (org, ids["field_id"]),
    )
    conn.execute(
        "INSERT INTO custom_fields.definitions (organization_id, field_id, definition, label, type)"
        " VALUES (%s, %s, 1, 'B field', 'text')",
        (org, ids["field_id"]),
    )
    ids.update(_scheduling_rows(conn, org, ids))
    _form_rows(conn, org, ids)
    for kind in ("report", "prescription"):
        conn.execute(
            "INSERT INTO documents.documents (organization_id, id, kind, appointment_id,"
            " patient_id, title, status, body_sealed, finalized_at, content_sha256)"
            " VALUES (%s, %s, %s, %s, %s, 'B document', 'final', '\\x00', now(), repeat('0', 64))",
            (org, ids[f"{kind}_id"], kind, ids["appointment_id"], ids["patient_id"]),
        )
    conn.execute(
        "INSERT INTO attachments.attachments (organization_id, id, owner_type, patient_id,"
        " filename, media_type, size_bytes, sha256, storage_key, status, completed_at)"
        " VALUES (%s, %s, 'patient', %s, 'b.pdf', 'application/pdf', 1, repeat('0', 64), %s,"
        " 'available', now())",
        (org, ids["attachment_id"], ids["patient_id"], f"{org}/{ids['attachment_id']}"),
    )
    conn.execute(
        "INSERT INTO webhooks.endpoints (organization_id, id, url, secret_sealed)"
        " VALUES (%s, %s, 'https://hooks.example.com/b', '\\x00')",
        (org, ids["endpoint_id"]),
    )
    conn.execute(
        "INSERT INTO webhooks.deliveries (organization_id, id, endpoint_id, event_id, event_type,"
        " body, status, finished_at) VALUES (%s, %s, %s, gen_random_uuid(), 'webhook.test',"
        " '{}', 'failed', now())",
        (org, ids["delivery_id"], ids["endpoint_id"]),
    )
    conn.execute(
        "INSERT INTO gdpr.requests (organization_id, id, kind, patient_id, reason)"
        " VALUES (%s, %s, 'export', %s, 'B asked')",
        (org, ids["request_id"], ids["patient_id"]),
    )
    conn.execute(
        "INSERT INTO segments.segments (organization_id, id, name, kind, member_count)"
        " VALUES (%s, %s, 'B segment', 'static', 1)",
        (org, ids["segment_id"]),
    )
    conn.execute(
        "INSERT INTO segments.members (organization_id, segment_id, patient_id, source)"
        " VALUES (%s, %s, %s, 'manual')",
        (org, ids["segment_id"], ids["patient_id"]),
    )
    _broadcast_rows(conn, org, ids)
    return ids


def _broadcast_rows(
    conn: psycopg.Connection[tuple[object, ...]], org: uuid.UUID, ids: dict[str, str]
) -> None:
    """A message template, a sent campaign with one message, an import and a recipient."""
    conn.execute(
        "INSERT INTO broadcasts.templates (organization_id, id, name, channel, body)"
        " VALUES (%s, %s, 'B template', 'sms', 'Hi')",
        (org, ids["broadcast_template_id"]),
    )
    conn.execute(
        "INSERT INTO broadcasts.campaigns (organization_id, id, name, template_id, channel,"
        " segment_ids, status, subject, body) VALUES (%s, %s, 'B campaign', %s, 'sms', %s,"
        " 'draft', NULL, NULL)",
        (org, ids["campaign_id"], ids["broadcast_template_id"], [ids["segment_id"]]),
    )
    conn.execute(
        "INSERT INTO broadcasts.imports (organization_id, id, list_name, filename, media_type,"
        " sha256, status) VALUES (%s, %s, 'b-list', 'b.csv', 'text/csv', '\\x00', 'completed')",
        (org, ids["import_id"]),
    )
    conn.execute(
        "INSERT INTO broadcasts.recipients (organization_id, id, list_name, patient_id, email)"
        " VALUES (%s, %s, 'b-list', %s, 'b@example.com')",
        (org, ids["recipient_id"], ids["patient_id"]),
    )


def _scheduling_rows(
    conn: psycopg.Connection[tuple[object, ...]], org: uuid.UUID, ids: dict[str, str]
) -> dict[str, str]:
    """A template, a video appointment (with its history) and a calendar feed of `org`."""
    texts = _random_texts()
    conn.execute(
        "INSERT INTO scheduling.appointment_templates"
        " (organization_id, id, slug, title, duration_minutes) VALUES (%s, %s, %s, 'B', 30)",
        (org, ids["template_id"], texts["template_slug"]),
    )
    conn.execute(
        "INSERT INTO scheduling.appointments (organization_id, id, uid, specialist_id,"
        " patient_id, template_id, title, status, starts_at, ends_at, blocked, time_zone, video,"
        " video_status, video_url, video_expires_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, 'B visit', 'upcoming', now() + interval '1 day',"
        " now() + interval '25 hours', tstzrange(now() + interval '1 day',"
        " now() + interval '25 hours'), 'UTC', true, 'ready', 'https://rooms.test/b',"
        " now() + interval '26 hours')",
        (
            org,
            ids["appointment_id"],
            texts["appointment_uid"],
            ids["specialist_id"],
            ids["patient_id"],
            ids["template_id"],
        ),
    )
    conn.execute(
        "INSERT INTO scheduling.appointment_events (organization_id, appointment_id, kind)"
        " VALUES (%s, %s, 'created')",
        (org, ids["appointment_id"]),
    )
    conn.execute(
        "INSERT INTO scheduling.calendar_feeds (organization_id, id, specialist_id, token_hash)"
        " VALUES (%s, %s, %s, %s)",
        (org, ids["feed_id"], ids["specialist_id"], uuid.uuid4().bytes),
    )
    return texts


def _form_rows(
    conn: psycopg.Connection[tuple[object, ...]], org: uuid.UUID, ids: dict[str, str]
) -> None:
    """A published form template of `org` and a signed form from it for its patient."""
    conn.execute(
        "INSERT INTO forms.templates (organization_id, id, title, latest_version)"
        " VALUES (%s, %s, 'B form', 1)",
        (org, ids["form_template_id"]),
    )
    conn.execute(
        "INSERT INTO forms.template_versions (organization_id, template_id, number, title,"
        " description, signer_roles, items, schema_sha256)"
        " VALUES (%s, %s, 1, 'B form', '', '{admin}', '[]', repeat('0', 64))",
        (org, ids["form_template_id"]),
    )
    conn.execute(
        "INSERT INTO forms.forms (organization_id, id, template_id, template_version, patient_id,"
        " appointment_id, status, signer_role, signature_meaning, signed_at, content_sha256,"
        " signature_sha256) VALUES (%s, %s, %s, 1, %s, %s, 'signed', 'admin', 'reviewed', now(),"
        " repeat('0', 64), repeat('0', 64))",
        (org, ids["form_id"], ids["form_template_id"], ids["patient_id"], ids["appointment_id"]),
    )


def _random_texts() -> dict[str, str]:
    """Path parameters that are not uuids, in their formats, naming nothing yet."""
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    return {
        "appointment_uid": "".join(alphabet[b % 32] for b in uuid.uuid4().bytes + b"0123456789")[
            :26
        ],
        "template_slug": f"no-such-{uuid.uuid4().hex[:8]}",
        "number": "1",
    }


NEW_IDS = (
    "patient_id",
    "specialty_id",
    "specialist_id",
    "field_id",
    "template_id",
    "appointment_id",
    "feed_id",
    "form_template_id",
    "form_id",
    "report_id",
    "prescription_id",
    "attachment_id",
    "endpoint_id",
    "delivery_id",
    "segment_id",
    "request_id",
    "broadcast_template_id",
    "campaign_id",
    "recipient_id",
    "import_id",
)


def _tenant_digest(conn: psycopg.Connection[tuple[object, ...]], org: str) -> str:
    """A fingerprint of every row of `org` in every tenant table (and the organization row)."""
    tables = conn.execute(
        """
        SELECT n.nspname, c.relname FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace
          JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'organization_id'
         WHERE c.relkind = 'r' AND n.nspname = ANY(%s) ORDER BY 1, 2
        """,
        (list(migrations.MODULES),),
    ).fetchall()
    digest = hashlib.sha256()
    for schema, table in tables:
        rows = conn.execute(
            psycopg.sql.SQL(
                "SELECT to_jsonb(t) FROM {}.{} t WHERE organization_id = %s ORDER BY 1::text"
            ).format(psycopg.sql.Identifier(str(schema)), psycopg.sql.Identifier(str(table))),
            (org,),
        ).fetchall()
        digest.update(json.dumps([str(r[0]) for r in rows]).encode())
    org_row = conn.execute(
        "SELECT to_jsonb(o) FROM platform.organizations o WHERE id = %s", (org,)
    ).fetchone()
    digest.update(str(org_row).encode())
    return digest.hexdigest()


def _shape(answer: httpx.Response) -> tuple[int, str, list[str]]:
    body = answer.json()
    return answer.status_code, body.get("type", ""), sorted(body)


@pytest.mark.parametrize("op", WITH_IDS, ids=lambda op: op.operation_id)
async def test_cross_tenant_ids_answer_like_missing_ones(
    client: httpx.AsyncClient,
    two_tenants: tuple[Person, dict[str, str]],
    admin_conn: psycopg.Connection[tuple[object, ...]],
    op: Operation,
) -> None:
    a_admin, b_ids = two_tenants
    names = re.findall(r"\{(\w+)\}", op.path)
    unknown = set(names) - set(b_ids)
    assert not unknown, f"register how to make another tenant's {unknown} in this test"
    before = _tenant_digest(admin_conn, b_ids["organization_id"])

    def random_ids(organization_id: str) -> dict[str, str]:
        return {
            "organization_id": organization_id,
            "user_id": str(uuid.uuid4()),
            "api_key_id": str(uuid.uuid4()),
            "slug": f"no-such-{uuid.uuid4().hex[:8]}",
            **{name: str(uuid.uuid4()) for name in NEW_IDS},
            **_random_texts(),
        }

    a_org = str(a_admin.organization_id)
    # B's organization itself, against an organization that does not exist...
    cases = [(b_ids, random_ids(str(uuid.uuid4())))]
    # ...and B's member or key under A's own organization, against ids that do not exist.
    if set(names) - {"organization_id"}:
        cases.append(({**b_ids, "organization_id": a_org}, random_ids(a_org)))
    for foreign, missing_ids in cases:
        crossing = await _request(client, op, foreign, a_admin.auth)
        missing = await _request(client, op, missing_ids, a_admin.auth)
        assert crossing.status_code == 404, (op.operation_id, foreign, crossing.text)
        assert _shape(crossing) == _shape(missing)
        assert crossing.json()["detail"] == missing.json()["detail"]
    assert _tenant_digest(admin_conn, b_ids["organization_id"]) == before


async def test_api_keys_act_for_their_organization_only(
    client: httpx.AsyncClient, two_tenants: tuple[Person, dict[str, str]], app: CoreApp
) -> None:
    a_admin, b_ids = two_tenants
    created = await client.post(
        f"/v1/organizations/{a_admin.organization_id}/api-keys",
        headers=a_admin.auth,
        json={"name": "sync", "role": "staff"},
    )
    assert created.status_code == 201, created.text
    key = {"X-API-Key": created.json()["key"]}
    own = await client.get(f"/v1/organizations/{a_admin.organization_id}/members", headers=key)
    assert own.status_code == 200
    other = await client.get(f"/v1/organizations/{b_ids['organization_id']}/members", headers=key)
    assert other.status_code == 404
    assert (await client.get("/v1/me", headers=key)).status_code == 403  # keys are not people


def _forged_tokens(app: CoreApp, user: Person) -> dict[str, str]:
    tokens = app.dependencies.tokens
    subject, org = str(user.user_id), str(user.organization_id)
    good = tokens.issue(subject=subject, organization_id=org, role="admin")
    head, body, signature = good.split(".")
    return {
        "garbage": "not-a-jwt",
        "expired": tokens.issue(
            subject=subject, organization_id=org, role="admin", now=1_000_000, ttl_s=60
        ),
        "tampered": f"{head}.{body[:-4]}AAAA.{signature}",
        "alg none": f"eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{body}.",
        "unknown user": tokens.issue(subject=str(uuid.uuid4()), organization_id=org, role="admin"),
        "oversized": "a" * 5000,
    }


@pytest.mark.parametrize(
    "kind", ["garbage", "expired", "tampered", "alg none", "unknown user", "oversized"]
)
async def test_bad_tokens_get_401_with_a_challenge(
    client: httpx.AsyncClient,
    app: CoreApp,
    person: Callable[..., Person],
    new_org: Callable[..., uuid.UUID],
    kind: str,
) -> None:
    user = person(new_org(), "admin")
    token = _forged_tokens(app, user)[kind]
    answer = await client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == 'Bearer realm="carebase", error="invalid_token"'
    assert answer.json()["detail"] == "The access token is invalid or expired."


async def test_no_credentials_get_a_challenge_without_an_error_code(
    client: httpx.AsyncClient,
) -> None:
    answer = await client.get("/v1/me")
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == 'Bearer realm="carebase"'
    other_scheme = await client.get("/v1/me", headers={"Authorization": "Basic YTpi"})
    assert other_scheme.status_code == 401
