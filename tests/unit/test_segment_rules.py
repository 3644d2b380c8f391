"""Segment rules without a database: what `check` refuses (with pointers), and a property
that no value of a generated rule tree ever reaches the SQL text."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carebase.errors import ValidationFailed
from carebase.services import segment_rules as rules

TODAY = dt.date(2026, 11, 30)
FIELD_ID = uuid.UUID("11111111-2222-4333-8444-555555555555")
REGISTRY = rules.Registry.of(
    [
        *rules.BUILT_IN,
        rules.specialty_field([("s§1", "Physio")]),
        rules.signed_forms_field([("t§1", "Intake")]),
        rules.custom_field("goal", "Goal", "text", FIELD_ID, None),
        rules.custom_field("level", "Level", "number", uuid.uuid4(), None),
        rules.custom_field("since", "Since", "date", uuid.uuid4(), None),
        rules.custom_field("opt_in", "Opt in", "boolean", uuid.uuid4(), None),
        rules.custom_field("side", "Side", "select", uuid.uuid4(), ["l§", "r§"]),
        rules.custom_field("tags", "Tags", "multi_select", uuid.uuid4(), ["a§", "b§"]),
    ]
)


def pointers(tree: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ValidationFailed) as failed:
        rules.check(tree, REGISTRY)
    return {error.pointer: error.message for error in failed.value.errors}


def group(*items: dict[str, Any], combinator: str = "and") -> dict[str, Any]:
    return {"combinator": combinator, "rules": list(items)}


def test_unknown_fields_operators_and_values_are_named_by_pointer() -> None:
    found = pointers(
        group(
            {"field": "birth_date", "operator": "=", "value": "1980-01-01"},
            {"field": "status", "operator": "contains", "value": "act"},
            group({"field": "appointment_count", "operator": ">", "value": "three"}),
            {"field": "created_at", "operator": "between", "value": ["2026-01-01"]},
            {"field": "last_visit", "operator": "withinLastDays", "value": 2.5},
            {"field": "status", "operator": "=", "value": "deleted"},
            {"field": "custom.tags", "operator": "anyOf", "value": []},
            {"field": "created_at", "operator": "<", "value": "2026-02-30"},
        )
    )
    assert set(found) == {
        "/body/rules/rules/0/field",
        "/body/rules/rules/1/operator",
        "/body/rules/rules/2/rules/0/value",
        "/body/rules/rules/3/value",
        "/body/rules/rules/4/value",
        "/body/rules/rules/5/value",
        "/body/rules/rules/6/value",
        "/body/rules/rules/7/value",
    }
    assert "equals" not in found["/body/rules/rules/1/operator"]  # names the allowed ones
    assert "=" in found["/body/rules/rules/1/operator"]


def test_sealed_data_is_never_a_field() -> None:
    for key in ("birth_date", "national_id", "phone", "address", "notes"):
        assert key not in REGISTRY.fields


def test_depth_rules_and_list_limits() -> None:
    deep = group(group(group(group(group({"field": "status", "operator": "null"})))))
    assert "/body/rules/rules/0/rules/0/rules/0/rules/0" in pointers(deep)
    many = group(*[{"field": "status", "operator": "null"}] * 51)
    assert "50 rules" in pointers(many)["/body/rules"]
    wide = group({"field": "email", "operator": "in", "value": ["x"] * 501})
    assert "500" in pointers(wide)["/body/rules/rules/0/value"]
    rules.check(group({"field": "email", "operator": "in", "value": ["x"] * 500}), REGISTRY)


def test_an_empty_group_matches_everyone_and_a_vanished_field_no_one() -> None:
    assert rules.compile_tree(group(), REGISTRY, today=TODAY).condition.as_string() == "true"
    gone = rules.compile_tree(
        group({"field": "custom.removed", "operator": "notNull"}), REGISTRY, today=TODAY
    )
    assert gone.condition.as_string() == "(false)"


def test_like_wildcards_in_values_are_escaped() -> None:
    compiled = rules.compile_tree(
        group({"field": "given_name", "operator": "beginsWith", "value": "50%_off\\"}),
        REGISTRY,
        today=TODAY,
    )
    assert list(compiled.params.values()) == ["50\\%\\_off\\\\%"]


# --- no value in the SQL text ----------------------------------------------------------------

MARKED_TEXT = st.text(min_size=0, max_size=12).map(lambda text: f"§{text}'; DROP TABLE x; --")
MARKED_NUMBER = st.sampled_from([731.0731, -9173, 4242424])
MARKED_DATE = st.sampled_from(["1917-03-17", "2042-04-24"])


def _value(field: rules.Field, operator: str) -> st.SearchStrategy[Any]:
    options = [value for value, _ in field.options or ()]
    scalar: st.SearchStrategy[Any] = {
        "text": MARKED_TEXT,
        "number": MARKED_NUMBER,
        "date": MARKED_DATE,
        "boolean": st.booleans(),
    }.get(field.type, st.sampled_from(options))
    if operator in ("null", "notNull"):
        return st.none()
    if operator in rules.DAYS:
        return st.sampled_from([3917, 7313])
    if operator in rules.PAIRS:
        return st.lists(scalar, min_size=2, max_size=2)
    if operator in rules.LISTS:
        return st.lists(scalar, min_size=1, max_size=3)
    return scalar


@st.composite
def _rule(draw: st.DrawFn) -> dict[str, Any]:
    field = draw(st.sampled_from(sorted(REGISTRY.fields.values(), key=lambda f: f.key)))
    operator = draw(st.sampled_from(field.operators))
    value = draw(_value(field, operator))
    return {"field": field.key, "operator": operator, **({} if value is None else {"value": value})}


TREES = st.recursive(
    _rule(),
    lambda children: st.fixed_dictionaries(
        {
            "combinator": st.sampled_from(["and", "or"]),
            "not": st.booleans(),
            "rules": st.lists(children, max_size=4),
        }
    ),
    max_leaves=12,
).map(lambda tree: tree if "combinator" in tree else group(tree))


def _leaves(tree: dict[str, Any]) -> list[Any]:
    found: list[Any] = []
    for item in tree["rules"]:
        if "combinator" in item:
            found += _leaves(item)
        elif "value" in item:
            value = item["value"]
            found += value if isinstance(value, list) else [value]
    return found


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(tree=TREES)
def test_no_rule_value_ever_appears_in_the_sql(tree: dict[str, Any]) -> None:
    compiled = rules.compile_tree(tree, REGISTRY, today=TODAY)
    text = rules.matching_patients(compiled).as_string()
    assert "§" not in text  # every text, option and specialty value is marked
    assert str(FIELD_ID) not in text  # custom field ids are bound too
    for value in _leaves(tree):
        if isinstance(value, bool):
            continue
        assert str(value) not in text
    for day in (3917, 7313):
        assert str(TODAY - dt.timedelta(days=day)) not in text
