"""Segment rules compiled to SQL, against the real database: for generated rule trees
(hypothesis), the patients the SQL selects under row-level security are exactly the ones an
independent evaluation in Python selects from the facts the clinic was seeded with.

The oracle below restates the semantics `services/segment_rules.py` documents: comparisons
with an empty value are false, negative operators match empty values, text matching of
contains/begins/ends ignores case, dates are the organization's (UTC) calendar days."""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carebase.operations.devstack import EmbeddedStack
from carebase.persistence.db import begin_as
from carebase.principal import Principal
from carebase.services import form_schema
from carebase.services import segment_rules as rules
from carebase.services.appointments import new_uid

pytestmark = pytest.mark.integration

NOW = dt.datetime(2026, 6, 15, 12, 0, tzinfo=dt.UTC)
TODAY = NOW.date()
GIVEN = ("Ana", "Ivo", "Mia", "Luka", "Ema", "Noa_x", "Sara%")
FAMILY = ("Horvat", "Kovac", "Babic", "Maric", "Novak")
SELECT_OPTIONS = ("knee", "hip", "shoulder")
MULTI_OPTIONS = ("sms", "email", "phone")
CUSTOM_TYPES = ("text", "number", "date", "boolean", "select", "multi_select")
STATUSES = ("done", "done", "cancelled", "booked", "upcoming", "no_show", "entered_in_error")


@dataclass
class Seeded:
    org: uuid.UUID
    registry: rules.Registry
    facts: dict[uuid.UUID, dict[str, Any]]
    specialties: list[str]
    templates: list[str]
    custom: dict[str, uuid.UUID]


def _custom_value(rng: random.Random, kind: str) -> Any:
    if kind == "text":
        return rng.choice(("left knee", "Right Hip", "", "neck_1"))
    if kind == "number":
        return rng.choice((0, 1, 2.5, 7, 10, -3))
    if kind == "date":
        return (TODAY - dt.timedelta(days=rng.randint(-30, 200))).isoformat()
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "select":
        return rng.choice(SELECT_OPTIONS)
    return rng.sample(MULTI_OPTIONS, rng.randint(0, 3))


def _insert(conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...]) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


@pytest.fixture(scope="module")
def seeded(stack: EmbeddedStack) -> Iterator[Seeded]:  # noqa: PLR0915 — one seeding script
    """A clinic of 36 patients with every kind of fact a field reads, from a fixed seed."""
    rng = random.Random(20261130)
    with psycopg.connect(stack.database_admin_url, autocommit=True) as conn:
        org = _insert(
            conn,
            "INSERT INTO platform.organizations (slug, name) VALUES (%s, 'Rules') RETURNING id",
            (f"rules-{uuid.uuid4().hex[:8]}",),
        )
        user = _insert(
            conn,
            "INSERT INTO identity.users (email) VALUES (%s) RETURNING id",
            (f"dr-{uuid.uuid4().hex[:8]}@example.com",),
        )
        conn.execute(
            "INSERT INTO identity.memberships (organization_id, user_id, role)"
            " VALUES (%s, %s, 'specialist')",
            (org, user),
        )
        specialist = _insert(
            conn,
            "INSERT INTO specialists.specialists (organization_id, user_id, display_name)"
            " VALUES (%s, %s, 'Dr Rules') RETURNING id",
            (org, user),
        )
        specialties = [
            str(
                _insert(
                    conn,
                    "INSERT INTO specialists.specialties (organization_id, name)"
                    " VALUES (%s, %s) RETURNING id",
                    (org, name),
                )
            )
            for name in ("Physiotherapy", "Kinesiology", "Speech")
        ]
        items = form_schema.normalised([{"link_id": "ok", "text": "OK", "type": "boolean"}])
        templates = []
        for title in ("Intake", "Consent"):
            template = _insert(
                conn,
                "INSERT INTO forms.templates (organization_id, title, latest_version)"
                " VALUES (%s, %s, 1) RETURNING id",
                (org, title),
            )
            conn.execute(
                "INSERT INTO forms.template_versions (organization_id, template_id, number,"
                " title, description, signer_roles, items, schema_sha256)"
                " VALUES (%s, %s, 1, %s, '', '{admin}', %s, %s)",
                (org, template, title, json.dumps(items), form_schema.schema_sha256(items)),
            )
            templates.append(str(template))
        custom: dict[str, uuid.UUID] = {}
        fields: list[rules.Field] = []
        for kind in (*CUSTOM_TYPES, "secret"):
            field_id = _insert(
                conn,
                "INSERT INTO custom_fields.fields (organization_id, entity_type, key)"
                " VALUES (%s, 'patient', %s) RETURNING id",
                (org, f"f_{kind}"),
            )
            options = {"select": list(SELECT_OPTIONS), "multi_select": list(MULTI_OPTIONS)}
            conn.execute(
                "INSERT INTO custom_fields.definitions (organization_id, field_id, definition,"
                " label, type, sensitive, options) VALUES (%s, %s, 1, %s, %s, %s, %s)",
                (
                    org,
                    field_id,
                    kind,
                    "text" if kind == "secret" else kind,
                    kind == "secret",
                    options.get(kind),
                ),
            )
            custom[kind] = field_id
            if kind != "secret":
                fields.append(
                    rules.custom_field(f"f_{kind}", kind, kind, field_id, options.get(kind))
                )
        facts: dict[uuid.UUID, dict[str, Any]] = {}
        hour = 0
        for index in range(36):
            given_name, family = rng.choice(GIVEN), rng.choice(FAMILY)
            created = NOW - dt.timedelta(days=rng.randint(0, 400), hours=rng.randint(0, 23))
            updated = min(created + dt.timedelta(days=rng.randint(0, 60)), NOW)
            email = None if rng.random() < 0.3 else f"{given_name}.{family}{index}@example.com"
            email = email.lower() if email else None
            account = None
            if rng.random() < 0.3:
                account = _insert(
                    conn,
                    "INSERT INTO identity.users (email) VALUES (%s) RETURNING id",
                    (f"p-{uuid.uuid4().hex[:8]}@example.com",),
                )
                conn.execute(
                    "INSERT INTO identity.memberships (organization_id, user_id, role)"
                    " VALUES (%s, %s, 'patient')",
                    (org, account),
                )
            values: dict[str, Any] = {}
            stored: dict[str, Any] = {}
            for kind in CUSTOM_TYPES:
                if rng.random() < 0.35:
                    continue
                value = _custom_value(rng, kind)
                values[kind] = value
                stored[str(custom[kind])] = {"d": 1, "v": value}
            status = "archived" if rng.random() < 0.25 else "active"
            patient = _insert(
                conn,
                "INSERT INTO patients.patients (organization_id, given_name, family_name, email,"
                " user_id, status, custom_values, created_at, updated_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (org, given_name, family, email, account, status, json.dumps(stored), created,
                 updated),
            )  # fmt: skip
            visits: list[tuple[str, dt.datetime, str | None]] = []
            for _ in range(rng.randint(0, 4)):
                state = rng.choice(STATUSES)
                hour += 1
                past = state in ("done", "cancelled", "no_show", "entered_in_error")
                starts = NOW + dt.timedelta(hours=-hour if past else hour)
                specialty = rng.choice([*specialties, None])
                conn.execute(
                    "INSERT INTO scheduling.appointments (organization_id, uid, specialist_id,"
                    " patient_id, specialty_id, title, status, starts_at, ends_at, blocked,"
                    " time_zone) VALUES (%s, %s, %s, %s, %s, 'Visit', %s, %s, %s,"
                    " tstzrange(%s, %s), 'UTC')",
                    (org, new_uid(), specialist, patient, specialty, state, starts,
                     starts + dt.timedelta(minutes=30), starts, starts + dt.timedelta(minutes=30)),
                )  # fmt: skip
                visits.append((state, starts, specialty))
            signed = {t for t in templates if rng.random() < 0.4}
            for template in signed:
                conn.execute(
                    "INSERT INTO forms.forms (organization_id, template_id, template_version,"
                    " patient_id, status, signed_at, signer_role, signature_meaning,"
                    " content_sha256, signature_sha256) VALUES (%s, %s, 1, %s, 'signed', now(),"
                    " 'admin', 'author', %s, %s)",
                    (org, template, patient, "0" * 64, "0" * 64),
                )
            counted = [v for v in visits if v[0] not in ("cancelled", "entered_in_error")]
            done = [v for v in visits if v[0] == "done"]
            upcoming = [v[1] for v in visits if v[0] in ("booked", "upcoming") and v[1] > NOW]
            facts[patient] = {
                "status": status,
                "given_name": given_name,
                "family_name": family,
                "email": email,
                "has_account": account is not None,
                "created_at": created.date(),
                "updated_at": updated.date(),
                "appointment_count": len(counted),
                "visit_count": len(done),
                "last_visit": max(v[1] for v in done).date() if done else None,
                "next_appointment": min(upcoming).date() if upcoming else None,
                "specialty_seen": {v[2] for v in done if v[2] is not None},
                "signed_forms": signed,
                **{f"custom.f_{kind}": _typed(kind, value) for kind, value in values.items()},
            }
        registry = rules.Registry.of(
            [
                *rules.BUILT_IN,
                rules.specialty_field((s, s) for s in specialties),
                rules.signed_forms_field((t, t) for t in templates),
                *fields,
            ]
        )
        yield Seeded(org, registry, facts, specialties, templates, custom)


# --- the oracle -------------------------------------------------------------------------------


def _typed(kind: str, value: Any) -> Any:
    if kind == "date":
        return dt.date.fromisoformat(value)
    return value


def _matches(kind: str, have: Any, operator: str, value: Any) -> bool:  # noqa: PLR0911
    if kind == "text" and have == "" and operator in ("null", "notNull"):
        have = None
    if kind == "multi_select":
        chosen = set(have or ())
        if operator == "null":
            return not chosen
        if operator == "notNull":
            return bool(chosen)
        wanted = set(value)
        return {
            "anyOf": bool(chosen & wanted),
            "allOf": wanted <= chosen,
            "noneOf": not chosen & wanted,
        }[operator]
    if operator == "null":
        return have is None
    if operator == "notNull":
        return have is not None
    negative = operator in ("!=", "doesNotContain", "notIn", "notBetween")
    if have is None:
        return negative
    if operator in ("contains", "doesNotContain", "beginsWith", "endsWith"):
        text, part = have.lower(), value.lower()
        found = {
            "contains": part in text,
            "doesNotContain": part not in text,
            "beginsWith": text.startswith(part),
            "endsWith": text.endswith(part),
        }
        return found[operator]
    if operator in ("in", "notIn"):
        inside = have in [_typed(kind, v) for v in value]
        return inside if operator == "in" else not inside
    if operator in ("between", "notBetween"):
        low, high = sorted(_typed(kind, v) for v in value)
        inside = low <= have <= high
        return inside if operator == "between" else not inside
    if operator == "withinLastDays":
        return TODAY - dt.timedelta(days=value) <= have <= TODAY
    if operator == "moreThanDaysAgo":
        return have < TODAY - dt.timedelta(days=value)
    other = _typed(kind, value)
    return {
        "=": have == other,
        "!=": have != other,
        "<": have < other,
        "<=": have <= other,
        ">": have > other,
        ">=": have >= other,
    }[operator]


def evaluate(tree: Mapping[str, Any], facts: Mapping[str, Any], registry: rules.Registry) -> bool:
    parts = []
    for item in tree["rules"]:
        if "combinator" in item:
            parts.append(evaluate(item, facts, registry))
        else:
            kind = registry.fields[item["field"]].type
            have = facts.get(item["field"])
            parts.append(_matches(kind, have, item["operator"], item.get("value")))
    result = all(parts) if tree["combinator"] == "and" else any(parts) if parts else True
    return not result if tree.get("not") else result


# --- generated trees --------------------------------------------------------------------------

TEXT_VALUES = st.sampled_from(
    ["Ana", "an", "ova", "H", "horvat", "%", "_", "x", "Sara%", "Noa_x", "left", "KNEE", "", "1"]
)
DAYS_BACK = st.integers(min_value=-40, max_value=420).map(
    lambda d: (TODAY - dt.timedelta(days=d)).isoformat()
)
NUMBERS = st.sampled_from([-3, 0, 1, 2, 2.5, 3, 7, 10, 11])


def _values(field: rules.Field, operator: str, seeded: Seeded) -> st.SearchStrategy[Any]:
    options = [value for value, _ in field.options or ()]
    scalar: st.SearchStrategy[Any] = {
        "text": TEXT_VALUES,
        "number": NUMBERS,
        "date": DAYS_BACK,
        "boolean": st.booleans(),
        "select": st.sampled_from(options or ["x"]),
        "multi_select": st.sampled_from(options or ["x"]),
    }[field.type]
    if operator in ("null", "notNull"):
        return st.none()
    if operator in rules.DAYS:
        return st.integers(min_value=0, max_value=400)
    if operator in rules.PAIRS:
        return st.lists(scalar, min_size=2, max_size=2)
    if operator in rules.LISTS:
        return st.lists(scalar, min_size=1, max_size=4)
    return scalar


@st.composite
def rule(draw: st.DrawFn, seeded: Seeded) -> dict[str, Any]:
    field = draw(st.sampled_from(sorted(seeded.registry.fields.values(), key=lambda f: f.key)))
    operator = draw(st.sampled_from(field.operators))
    value = draw(_values(field, operator, seeded))
    found = {"field": field.key, "operator": operator}
    return found if value is None else {**found, "value": value}


def tree(seeded: Seeded) -> st.SearchStrategy[dict[str, Any]]:
    def group(children: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
        return st.fixed_dictionaries(
            {
                "combinator": st.sampled_from(["and", "or"]),
                "not": st.booleans(),
                "rules": st.lists(children, max_size=3),
            }
        )

    level4 = group(rule(seeded))
    level3 = group(st.one_of(rule(seeded), level4))
    level2 = group(st.one_of(rule(seeded), level3))
    return group(st.one_of(rule(seeded), rule(seeded), level2))


# --- the property -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tenant(stack: EmbeddedStack, seeded: Seeded) -> Iterator[psycopg.Connection[Any]]:
    """A connection of the app role (no BYPASSRLS): each example reads in the clinic's
    read-only tenant transaction."""
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        yield conn


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_members_are_what_python_evaluates(
    data: st.DataObject, seeded: Seeded, tenant: psycopg.Connection[Any]
) -> None:
    generated = data.draw(tree(seeded))
    rules.check(generated, seeded.registry)
    compiled = rules.compile_tree(generated, seeded.registry, today=TODAY)
    statement = rules.matching_patients(compiled)
    params = {**compiled.params, "org": seeded.org, "tz": "UTC", "now": NOW}
    tenant.execute(begin_as(Principal(None, seeded.org, "admin"), read_only=True))
    try:
        found = {row[0] for row in tenant.execute(statement, params).fetchall()}
    finally:
        tenant.execute("ROLLBACK")
    expected = {
        patient
        for patient, facts in seeded.facts.items()
        if evaluate(generated, facts, seeded.registry)
    }
    assert found == expected, json.dumps(generated)


def test_the_seed_spreads_over_every_field(seeded: Seeded) -> None:
    """The property means something only when the facts vary: each field has a value in
    some patients and (except the always-present ones) none in others."""
    for key in seeded.registry.fields:
        seen = [facts.get(key) for facts in seeded.facts.values()]
        assert len({repr(sorted(v) if isinstance(v, set) else v) for v in seen}) > 1, key
