"""Form items and answers without a database: design checks, answers, enable_when, hashes."""

from __future__ import annotations

from typing import Any

import pytest

from carebase.errors import ValidationFailed
from carebase.services import form_schema as fs
from carebase.web.bodies import JsonBody
from carebase.web.contract import Contract

KEYS = fs.prefill_keys(["injury_side"])


def items(*given: dict[str, Any]) -> list[dict[str, Any]]:
    return fs.normalised(given)


def codes(found: list[Any]) -> list[tuple[str, str]]:
    return [(e.pointer, e.code) for e in found]


def test_prefill_keys_are_the_record_and_the_custom_fields() -> None:
    assert "patient.phone" in KEYS
    assert "custom.injury_side" in KEYS
    assert "patient.national_id" not in KEYS  # never copied into a form


def test_normalised_items_have_every_key_in_one_order() -> None:
    (item,) = items({"link_id": "a", "type": "boolean", "text": "A"})
    assert list(item) == list(fs.KEYS)
    assert item["required"] is False
    assert item["options"] == []


def test_items_that_cannot_carry_what_they_claim() -> None:
    found = fs.check_items(
        items(
            {"link_id": "g", "text": "G", "type": "group", "required": True},
            {"link_id": "n", "text": "N", "type": "boolean", "options": ["x"]},
            {"link_id": "b", "text": "B", "type": "boolean", "min": 1},
            {"link_id": "i", "text": "I", "type": "integer", "min": 5, "max": 1},
            {"link_id": "p", "text": "P", "type": "integer", "pattern": "x"},
            {"link_id": "f", "text": "F", "type": "attachment", "prefill": "patient.phone"},
            {"link_id": "c", "text": "C", "type": "string", "parent_link_id": "n"},
        ),
        KEYS,
    )
    assert codes(found) == [
        ("/body/items/0/required", "invalid"),
        ("/body/items/1/options", "invalid"),
        ("/body/items/2/min", "invalid"),
        ("/body/items/3/min", "invalid"),
        ("/body/items/4/pattern", "invalid"),
        ("/body/items/5/prefill", "invalid"),
        ("/body/items/6/parent_link_id", "invalid"),
    ]


def test_conditions_name_answerable_items_with_fitting_operators() -> None:
    found = fs.check_items(
        items(
            {"link_id": "g", "text": "G", "type": "group"},
            {"link_id": "s", "text": "S", "type": "string"},
            {
                "link_id": "x",
                "text": "X",
                "type": "boolean",
                "enable_when": {
                    "conditions": [
                        {"question": "g", "operator": "exists"},
                        {"question": "s", "operator": ">", "answer": "a"},
                        {"question": "s", "operator": "="},
                        {"question": "x", "operator": "exists"},
                    ]
                },
            },
        ),
        KEYS,
    )
    assert codes(found) == [
        ("/body/items/2/enable_when/conditions/0/question", "invalid"),
        ("/body/items/2/enable_when/conditions/1/operator", "invalid"),
        ("/body/items/2/enable_when/conditions/2/answer", "required"),
        ("/body/items/2/enable_when/conditions/3/question", "not_found"),
    ]


def test_a_group_enabled_by_its_own_child_is_a_cycle() -> None:
    found = fs.check_items(
        items(
            {
                "link_id": "g",
                "text": "G",
                "type": "group",
                "enable_when": {"conditions": [{"question": "c", "operator": "exists"}]},
            },
            {"link_id": "c", "text": "C", "type": "boolean", "parent_link_id": "g"},
        ),
        KEYS,
    )
    assert [e.code for e in found] == ["cycle"]


@pytest.mark.parametrize(
    ("item", "value", "fails"),
    [
        ({"type": "boolean"}, True, False),
        ({"type": "boolean"}, 1, True),
        ({"type": "integer", "min": 0, "max": 10}, 10, False),
        ({"type": "integer", "min": 0, "max": 10}, 11, True),
        ({"type": "integer"}, 2.5, True),
        ({"type": "integer"}, True, True),
        ({"type": "decimal", "max": 1.5}, 1.25, False),
        ({"type": "date"}, "2024-02-29", False),
        ({"type": "date"}, "2023-02-29", True),
        ({"type": "date-time"}, "2024-02-29T10:00:00+02:00", False),
        ({"type": "date-time"}, "2024-02-29T10:00:00", True),
        ({"type": "string", "max": 3}, "abcd", True),
        ({"type": "string", "pattern": "^[0-9]+$"}, "123", False),
        ({"type": "text", "pattern": "^[0-9]+$"}, "12a", True),
        ({"type": "choice", "options": ["l", "r"]}, "r", False),
        ({"type": "choice", "options": ["l", "r"]}, "x", True),
        ({"type": "multi-choice", "options": ["l", "r"], "max": 1}, ["l", "r"], True),
        ({"type": "multi-choice", "options": ["l", "r"]}, ["l", "l"], True),
        ({"type": "multi-choice", "options": ["l", "r"]}, ["r"], False),
        ({"type": "attachment"}, "5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a", False),
        ({"type": "attachment"}, "report.pdf", True),
        ({"type": "display"}, "x", True),
    ],
)
def test_answers_fit_their_item(item: dict[str, Any], value: Any, fails: bool) -> None:
    (full,) = items({"link_id": "a", "text": "A", **item})
    assert (fs.check_answer(full, value) is not None) is fails


SURVEY = items(
    {"link_id": "hurts", "text": "Does it hurt?", "type": "boolean", "required": True},
    {
        "link_id": "where",
        "text": "Where",
        "type": "group",
        "enable_when": {"conditions": [{"question": "hurts", "operator": "=", "answer": True}]},
    },
    {
        "link_id": "side",
        "text": "Side",
        "type": "choice",
        "options": ["left", "right"],
        "parent_link_id": "where",
        "required": True,
    },
    {
        "link_id": "score",
        "text": "Score",
        "type": "integer",
        "required": True,
        "enable_when": {
            "behavior": "any",
            "conditions": [
                {"question": "side", "operator": "=", "answer": "left"},
                {"question": "side", "operator": "=", "answer": "right"},
            ],
        },
    },
)


def test_enable_when_follows_groups_and_answers() -> None:
    assert fs.enabled(SURVEY, {}) == {"hurts"}
    assert fs.enabled(SURVEY, {"hurts": True}) == {"hurts", "where", "side"}
    assert fs.enabled(SURVEY, {"hurts": True, "side": "left"}) == {
        "hurts",
        "where",
        "side",
        "score",
    }
    # A hidden question's answer does not count: its dependants hide with it.
    assert fs.enabled(SURVEY, {"hurts": False, "side": "left"}) == {"hurts"}


def test_submit_drops_hidden_answers_and_asks_for_shown_required_ones() -> None:
    kept, missing = fs.submitted(SURVEY, {"hurts": False, "side": "left", "score": 3})
    assert kept == {"hurts": False}
    assert missing == []
    kept, missing = fs.submitted(SURVEY, {"hurts": True})
    assert [e.pointer for e in missing] == ["/values/side"]


def test_hashes_are_canonical() -> None:
    assert fs.canonical_sha256({"b": 1, "a": "Ș"}) == fs.canonical_sha256({"a": "Ș", "b": 1.0})
    assert fs.schema_sha256(SURVEY) != fs.schema_sha256(SURVEY[:1])


def test_the_contract_caps_a_template_at_500_items() -> None:
    """Checked by the contract before the service sees it (a 4 KiB test server answers 413)."""
    body = Contract.for_service("core").operations["createFormTemplate"].body
    assert body is not None
    parse = JsonBody(body).parse
    item = '{"link_id": "i%d", "text": "i", "type": "boolean"}'
    five_hundred = ",".join(item % n for n in range(500))
    parse("application/json", f'{{"title": "t", "items": [{five_hundred}]}}'.encode())
    with pytest.raises(ValidationFailed) as refused:
        parse(
            "application/json", f'{{"title": "t", "items": [{five_hundred},{item % 500}]}}'.encode()
        )
    assert [e.pointer for e in refused.value.errors] == ["/body/items"]
