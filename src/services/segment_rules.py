"""Segment rules: the field registry, checking a rule tree, and compiling it to SQL.

A tree is what react-querybuilder produces: groups (`combinator` and/or, optional `not`,
`rules`) and rules (`field`, `operator`, `value`). It compiles to one boolean SQL expression
over a patient row `p`, the appointment aggregates `v` and the signed forms `sf`, built with
`psycopg.sql` only: every value and every custom field id is a bound parameter, field
expressions are constants of this module, and LIKE wildcards in values are escaped.

Semantics, which tests/unit/test_segment_sql.py's oracle restates in Python: a comparison
with an empty value is false; the negative operators (`!=`, `doesNotContain`, `notIn`,
`notBetween`, `noneOf`) match empty values; every rule is two-valued (so `not` of a group is
plain negation); an empty group matches every patient.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from uuid import UUID

from psycopg import sql

from carebase.errors import FieldError, ValidationFailed

MAX_DEPTH = 4
MAX_RULES = 50
MAX_LIST = 500
MAX_DAYS = 36_500
TEXT_LIMIT = 200

_EMPTY = ("null", "notNull")
OPERATORS: Mapping[str, tuple[str, ...]] = {
    "text": (
        "=", "!=", "contains", "doesNotContain", "beginsWith", "endsWith", "in", "notIn", *_EMPTY,
    ),
    "number": ("=", "!=", "<", "<=", ">", ">=", "between", "notBetween", *_EMPTY),
    "date": (
        "=", "!=", "<", "<=", ">", ">=", "between", "notBetween", "withinLastDays",
        "moreThanDaysAgo", *_EMPTY,
    ),
    "boolean": ("=", "!=", *_EMPTY),
    "select": ("=", "!=", "in", "notIn", *_EMPTY),
    "multi_select": ("anyOf", "allOf", "noneOf", *_EMPTY),
}  # fmt: skip
LISTS = frozenset({"in", "notIn", "anyOf", "allOf", "noneOf"})
PAIRS = frozenset({"between", "notBetween"})
DAYS = frozenset({"withinLastDays", "moreThanDaysAgo"})


@dataclass(frozen=True, slots=True)
class Field:
    """One field a rule may name. `expression` is this module's SQL for it (never a caller's
    text); custom fields read `custom_values` under their id, bound as a parameter."""

    key: str
    label: str
    type: str
    options: tuple[tuple[str, str], ...] | None = None
    expression: sql.Composable | None = None
    custom_id: UUID | None = None
    needs: frozenset[str] = frozenset()
    """The aggregates the expression reads: `visits` (appointments), `forms` (signed forms)."""

    @property
    def operators(self) -> tuple[str, ...]:
        return OPERATORS[self.type]


def _in_zone(column: str) -> sql.Composable:
    """A timestamp as the organization's calendar day (`%(tz)s`)."""
    return sql.SQL("(({} AT TIME ZONE %(tz)s)::date)").format(sql.SQL(column))


STATUS_OPTIONS = (("active", "Active"), ("archived", "Archived"))
# The fixed fields: the patient's row and what their appointments and forms add up to.
BUILT_IN: tuple[Field, ...] = (
    Field("status", "Status", "select", STATUS_OPTIONS, sql.SQL("p.status")),
    Field("given_name", "Given name", "text", None, sql.SQL("p.given_name")),
    Field("family_name", "Family name", "text", None, sql.SQL("p.family_name")),
    Field("email", "E-mail address", "text", None, sql.SQL("p.email")),
    Field("has_account", "Has an account", "boolean", None, sql.SQL("(p.user_id IS NOT NULL)")),
    Field("created_at", "Added on", "date", None, _in_zone("p.created_at")),
    Field("updated_at", "Record last changed on", "date", None, _in_zone("p.updated_at")),
    Field(
        "appointment_count",
        "Appointments (booked or held, not cancelled)",
        "number",
        None,
        sql.SQL("coalesce(v.appointment_count, 0)"),
        needs=frozenset({"visits"}),
    ),
    Field(
        "visit_count",
        "Visits completed",
        "number",
        None,
        sql.SQL("coalesce(v.visit_count, 0)"),
        needs=frozenset({"visits"}),
    ),
    Field(
        "last_visit",
        "Last completed visit",
        "date",
        None,
        _in_zone("v.last_visit"),
        needs=frozenset({"visits"}),
    ),
    Field(
        "next_appointment",
        "Next appointment",
        "date",
        None,
        _in_zone("v.next_appointment"),
        needs=frozenset({"visits"}),
    ),
)
SPECIALTY_SEEN = "specialty_seen"
SIGNED_FORMS = "signed_forms"
CUSTOM_PREFIX = "custom."


def specialty_field(options: Iterable[tuple[str, str]]) -> Field:
    return Field(
        SPECIALTY_SEEN,
        "Specialty seen (completed visits)",
        "multi_select",
        tuple(options),
        sql.SQL("coalesce(v.specialties, '{}'::text[])"),
        needs=frozenset({"visits"}),
    )


def signed_forms_field(options: Iterable[tuple[str, str]]) -> Field:
    return Field(
        SIGNED_FORMS,
        "Signed form templates",
        "multi_select",
        tuple(options),
        sql.SQL("coalesce(sf.templates, '{}'::text[])"),
        needs=frozenset({"forms"}),
    )


def custom_field(
    key: str, label: str, kind: str, field_id: UUID, options: Sequence[str] | None
) -> Field:
    """A patient custom field (never a sensitive one: those are sealed)."""
    choices = tuple((option, option) for option in options) if options is not None else None
    return Field(f"{CUSTOM_PREFIX}{key}", label, kind, choices, None, custom_id=field_id)


@dataclass(frozen=True, slots=True)
class Registry:
    fields: Mapping[str, Field]

    @classmethod
    def of(cls, fields: Iterable[Field]) -> Registry:
        return cls({f.key: f for f in fields})


# --- checking ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Check:
    registry: Registry
    problems: list[FieldError] = field(default_factory=list)
    rules: int = 0

    def fail(self, pointer: str, message: str, code: str = "invalid") -> None:
        self.problems.append(FieldError(pointer, message, code))


def check(tree: Mapping[str, Any], registry: Registry, *, pointer: str = "/body/rules") -> None:
    """Every problem of a tree at once (422), each with its JSON pointer."""
    state = _Check(registry)
    _check_group(state, tree, pointer, depth=1)
    if state.rules > MAX_RULES:
        state.fail(pointer, f"A segment holds at most {MAX_RULES} rules ({state.rules} given).")
    if state.problems:
        raise ValidationFailed(state.problems[:100])


def _check_group(state: _Check, group: Mapping[str, Any], pointer: str, *, depth: int) -> None:
    if depth > MAX_DEPTH:
        state.fail(pointer, f"Groups nest at most {MAX_DEPTH} deep.", "too_deep")
        return
    for index, item in enumerate(group.get("rules") or ()):
        at = f"{pointer}/rules/{index}"
        if "combinator" in item:
            _check_group(state, item, at, depth=depth + 1)
        else:
            state.rules += 1
            _check_rule(state, item, at)


def _check_rule(state: _Check, rule: Mapping[str, Any], pointer: str) -> None:
    found = state.registry.fields.get(rule["field"])
    if found is None:
        state.fail(f"{pointer}/field", "No such field: GET /v1/segments/fields lists them.")
        return
    operator = rule["operator"]
    if operator not in found.operators:
        allowed = ", ".join(found.operators)
        state.fail(f"{pointer}/operator", f"A {found.type} field takes: {allowed}.")
        return
    if operator in _EMPTY:
        return
    message = _value_problem(found, operator, rule.get("value"))
    if message is not None:
        state.fail(f"{pointer}/value", message)


def _value_problem(found: Field, operator: str, value: Any) -> str | None:
    if operator in DAYS:
        whole = _is_number(value) and value == int(value) and 0 <= value <= MAX_DAYS
        return None if whole else f"`{operator}` takes a whole number of days, 0 to {MAX_DAYS}."
    if operator in LISTS or operator in PAIRS:
        return _values_problem(found, operator, value)
    return _scalar_problem(found, value)


def _values_problem(found: Field, operator: str, value: Any) -> str | None:
    if operator in PAIRS and (not isinstance(value, list) or len(value) != 2):
        return f"`{operator}` takes a pair: [from, to]."
    if not isinstance(value, list) or not value:
        return f"`{operator}` takes a list of values."
    if len(value) > MAX_LIST:
        return f"`{operator}` takes at most {MAX_LIST} values."
    return _first(_scalar_problem(found, item) for item in value)


def _first(messages: Iterable[str | None]) -> str | None:
    return next((message for message in messages if message is not None), None)


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and abs(value) < 1e15
    )


def _scalar_problem(found: Field, value: Any) -> str | None:
    kind = found.type
    if kind == "number":
        return None if _is_number(value) else "A number (below 10^15 in size) is expected."
    if kind == "boolean":
        return None if isinstance(value, bool) else "true or false is expected."
    if kind == "date":
        return None if parse_date(value) is not None else "A date (YYYY-MM-DD) is expected."
    if not isinstance(value, str):
        return "A text value is expected."
    if found.options is not None and value not in {option for option, _ in found.options}:
        return "Not one of the field's options (GET /v1/segments/fields lists them)."
    return None


def parse_date(value: Any) -> dt.date | None:
    """A `YYYY-MM-DD` date in the years 1900–9999, else None."""
    if not isinstance(value, str) or len(value) != 10:
        return None
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        return None
    return day if day.year >= 1900 else None


# --- compiling --------------------------------------------------------------------------------


@dataclass(slots=True)
class Compiled:
    """A boolean SQL expression and its parameters; `needs` names the aggregates it reads."""

    condition: sql.Composable
    params: dict[str, Any]
    needs: frozenset[str]


@dataclass(slots=True)
class _Compiler:
    registry: Registry
    today: dt.date
    params: dict[str, Any] = field(default_factory=dict)
    needs: set[str] = field(default_factory=set)

    def bind(self, value: Any, cast: str | None = None) -> sql.Composable:
        name = f"v{len(self.params)}"
        self.params[name] = value
        placeholder = sql.Placeholder(name)
        return sql.SQL("{}::{}").format(placeholder, sql.SQL(cast)) if cast else placeholder


TRUE = sql.SQL("true")
FALSE = sql.SQL("false")


def compile_tree(tree: Mapping[str, Any], registry: Registry, *, today: dt.date) -> Compiled:
    """The tree as one SQL condition. A field that no longer exists (a custom field archived
    since the rules were saved) matches no patient; `check` refuses such trees on writes."""
    compiler = _Compiler(registry, today)
    condition = _group(compiler, tree)
    return Compiled(condition, compiler.params, frozenset(compiler.needs))


def _group(c: _Compiler, group: Mapping[str, Any]) -> sql.Composable:
    parts = [
        _group(c, item) if "combinator" in item else _rule(c, item)
        for item in group.get("rules") or ()
    ]
    if not parts:
        joined: sql.Composable = TRUE
    else:
        glue = sql.SQL(" AND " if group.get("combinator") == "and" else " OR ")
        joined = sql.SQL("({})").format(glue.join(parts))
    return sql.SQL("(NOT {})").format(joined) if group.get("not") else joined


def _rule(c: _Compiler, rule: Mapping[str, Any]) -> sql.Composable:
    found = c.registry.fields.get(rule["field"])
    if found is None or rule["operator"] not in found.operators:
        return FALSE
    c.needs |= found.needs
    expression = _expression(c, found)
    # Every rule is two-valued: a comparison with NULL is false, so NOT stays plain negation.
    return sql.SQL("coalesce({}, false)").format(
        _condition(c, found, expression, rule["operator"], rule.get("value"))
    )


def _expression(c: _Compiler, found: Field) -> sql.Composable:
    if found.expression is not None:
        return found.expression
    entry = sql.SQL("(p.custom_values -> {} -> 'v')").format(c.bind(str(found.custom_id), "text"))
    typed = {
        "number": "CASE WHEN jsonb_typeof({0}) = 'number' THEN ({0})::numeric END",
        "boolean": "CASE WHEN jsonb_typeof({0}) = 'boolean' THEN ({0})::boolean END",
        "date": (
            "CASE WHEN jsonb_typeof({0}) = 'string'"
            " AND ({0} #>> '{{}}') ~ '^[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}$'"
            " THEN ({0} #>> '{{}}')::date END"
        ),
        "multi_select": (
            "CASE WHEN jsonb_typeof({0}) = 'array'"
            " THEN ARRAY(SELECT jsonb_array_elements_text({0})) END"
        ),
    }.get(found.type, "CASE WHEN jsonb_typeof({0}) = 'string' THEN {0} #>> '{{}}' END")
    return sql.SQL("(" + typed + ")").format(entry)


def _typed(found: Field, value: Any) -> Any:
    if found.type == "number":
        return Decimal(repr(float(value))) if isinstance(value, float) else Decimal(value)
    if found.type == "date":
        return parse_date(value)
    return value


def _condition(  # noqa: PLR0911 — one return per operator family reads best
    c: _Compiler, found: Field, e: sql.Composable, operator: str, value: Any
) -> sql.Composable:
    if operator in _EMPTY:
        empty = _empty(found, e)
        return empty if operator == "null" else sql.SQL("(NOT {})").format(empty)
    if operator in DAYS:
        return _days(c, e, operator, int(value))
    if operator in LISTS:
        return _list(c, found, e, operator, [_typed(found, item) for item in value])
    if operator in PAIRS:
        low, high = sorted(_typed(found, item) for item in value)
        inside = sql.SQL("({} BETWEEN {} AND {})").format(e, c.bind(low), c.bind(high))
        if operator == "between":
            return inside
        return sql.SQL("({} IS NULL OR NOT {})").format(e, inside)
    if operator in ("contains", "doesNotContain", "beginsWith", "endsWith"):
        return _like(c, e, operator, str(value))
    bound = c.bind(_typed(found, value))
    if operator == "!=":
        return sql.SQL("({} IS DISTINCT FROM {})").format(e, bound)
    return sql.SQL("({} {} {})").format(e, sql.SQL(operator), bound)


def _empty(found: Field, e: sql.Composable) -> sql.Composable:
    if found.type == "text":
        return sql.SQL("({} IS NULL OR {} = '')").format(e, e)
    if found.type == "multi_select":
        return sql.SQL("(coalesce(cardinality({}), 0) = 0)").format(e)
    return sql.SQL("({} IS NULL)").format(e)


def _days(c: _Compiler, e: sql.Composable, operator: str, days: int) -> sql.Composable:
    since = c.bind(c.today - dt.timedelta(days=days))
    if operator == "withinLastDays":
        return sql.SQL("({} BETWEEN {} AND {})").format(e, since, c.bind(c.today))
    return sql.SQL("({} < {})").format(e, since)


def _list(
    c: _Compiler, found: Field, e: sql.Composable, operator: str, values: list[Any]
) -> sql.Composable:
    cast = {"number": "numeric[]", "date": "date[]"}.get(found.type, "text[]")
    bound = c.bind(values, cast)
    if operator == "in":
        return sql.SQL("({} = ANY({}))").format(e, bound)
    if operator == "notIn":
        return sql.SQL("({} IS NULL OR NOT ({} = ANY({})))").format(e, e, bound)
    if operator == "anyOf":
        return sql.SQL("({} && {})").format(e, bound)
    if operator == "allOf":
        return sql.SQL("({} @> {})").format(e, bound)
    return sql.SQL("(NOT (coalesce({}, '{{}}'::text[]) && {}))").format(e, bound)


def like_escape(text: str) -> str:
    """LIKE's wildcards and its escape character, taken literally."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _like(c: _Compiler, e: sql.Composable, operator: str, text: str) -> sql.Composable:
    escaped = like_escape(text)
    pattern = {
        "contains": f"%{escaped}%",
        "doesNotContain": f"%{escaped}%",
        "beginsWith": f"{escaped}%",
        "endsWith": f"%{escaped}",
    }[operator]
    bound = c.bind(pattern)
    if operator == "doesNotContain":
        return sql.SQL("({} IS NULL OR {} NOT ILIKE {})").format(e, e, bound)
    return sql.SQL("({} ILIKE {})").format(e, bound)


# --- the statement ----------------------------------------------------------------------------

_VISITS = sql.SQL(
    " LEFT JOIN (SELECT a.patient_id,"
    " count(*) FILTER (WHERE a.status NOT IN ('held', 'cancelled', 'entered_in_error'))"
    " AS appointment_count,"
    " count(*) FILTER (WHERE a.status = 'done') AS visit_count,"
    " max(a.starts_at) FILTER (WHERE a.status = 'done') AS last_visit,"
    " min(a.starts_at) FILTER (WHERE a.status IN ('booked', 'upcoming', 'confirmed')"
    " AND a.starts_at > %(now)s) AS next_appointment,"
    " array_agg(DISTINCT a.specialty_id::text) FILTER (WHERE a.status = 'done'"
    " AND a.specialty_id IS NOT NULL) AS specialties"
    " FROM scheduling.appointments a WHERE a.organization_id = %(org)s"
    " GROUP BY a.patient_id) v ON v.patient_id = p.id"
)
_FORMS = sql.SQL(
    " LEFT JOIN (SELECT f.patient_id, array_agg(DISTINCT f.template_id::text) AS templates"
    " FROM forms.forms f WHERE f.organization_id = %(org)s AND f.status = 'signed'"
    " GROUP BY f.patient_id) sf ON sf.patient_id = p.id"
)


def matching_patients(compiled: Compiled) -> sql.Composed:
    """SELECT p.id of the patients the condition matches, in organization `%(org)s`; the
    aggregates are joined only when the rules read them. A restricted patient (GDPR Art. 18)
    is in no segment."""
    joins = sql.Composed(
        [
            *([_VISITS] if "visits" in compiled.needs else []),
            *([_FORMS] if "forms" in compiled.needs else []),
        ]
    )
    return sql.SQL(
        "SELECT p.id FROM patients.patients p{joins} WHERE p.organization_id = %(org)s"
        " AND p.restricted_at IS NULL AND {cond}"
    ).format(joins=joins, cond=compiled.condition)
