"""A form template's items, checked as a whole; answers checked against them; enable_when.

Items are a flat list in display order, nested by `parent_link_id` under groups (a parent
comes before its children). FHIR Questionnaire is the model: an item is enabled when its
group is and its `enable_when` holds; answers to disabled items are dropped on submit, and
only enabled required items must be answered. Everything here is pure: the service passes
the prefill keys the organization knows.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import operator
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import re2
import rfc8785

from carebase.errors import FieldError, pointer_token

MAX_DEPTH = 5
ANSWERLESS = frozenset({"group", "display"})
CHOICES = frozenset({"choice", "multi-choice"})
ORDERED = frozenset({"integer", "decimal", "date", "date-time"})
BOUNDED = frozenset({"integer", "decimal", "string", "text", "multi-choice"})
PATTERNED = frozenset({"string", "text"})
PATIENT_PREFILL = (
    "given_name",
    "family_name",
    "email",
    "birth_date",
    "phone",
    "address",
)
DEFAULTS: Mapping[str, Any] = {
    "parent_link_id": None,
    "required": False,
    "options": [],
    "min": None,
    "max": None,
    "pattern": None,
    "enable_when": None,
    "prefill": None,
    "sensitive": False,
}
KEYS = ("link_id", "text", "type", *DEFAULTS)


def prefill_keys(custom_keys: Iterable[str]) -> frozenset[str]:
    """The keys `GET /v1/patients/{id}/prefill` can answer with."""
    return frozenset(
        [f"patient.{name}" for name in PATIENT_PREFILL] + [f"custom.{key}" for key in custom_keys]
    )


def normalised(items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every item with every key, in one order: what is stored and hashed."""
    result = []
    for item in items:
        full = {**DEFAULTS, **{k: v for k, v in item.items() if v is not None}}
        if full.get("enable_when") is not None:
            when = full["enable_when"]
            full["enable_when"] = {
                "behavior": when.get("behavior") or "all",
                "conditions": [
                    {k: c[k] for k in ("question", "operator", "answer") if c.get(k) is not None}
                    for c in when["conditions"]
                ],
            }
        result.append({key: full.get(key) for key in KEYS})
    return result


def schema_sha256(items: Sequence[Mapping[str, Any]]) -> str:
    return hashlib.sha256(rfc8785.dumps(list(items))).hexdigest()


def check_items(
    items: Sequence[Mapping[str, Any]], known_prefill: frozenset[str]
) -> list[FieldError]:
    """Every problem of the items, each with its pointer under `/body/items`."""
    errors: list[FieldError] = []
    where: dict[str, int] = {}
    depth: dict[str, int] = {}

    def fail(index: int, field: str | None, detail: str, code: str) -> None:
        suffix = f"/{field}" if field else ""
        errors.append(FieldError(f"/body/items/{index}{suffix}", detail, code))

    for index, item in enumerate(items):
        link = item["link_id"]
        if link in where:
            fail(index, "link_id", f"link_id {link!r} is used by item {where[link]}.", "duplicate")
            continue
        parent = item.get("parent_link_id")
        level = 1
        if parent is not None:
            if parent not in where:
                fail(index, "parent_link_id", "No earlier item has this link_id.", "not_found")
            elif items[where[parent]]["type"] != "group":
                fail(index, "parent_link_id", "Only a group holds items.", "invalid")
            else:
                level = depth[parent] + 1
                if level > MAX_DEPTH:
                    fail(index, "parent_link_id", f"Groups nest at most {MAX_DEPTH} deep.", "depth")
        where[link], depth[link] = index, level
        _check_item(index, item, known_prefill, fail)

    for index, item in enumerate(items):
        _check_conditions(index, item, items, where, fail)
    if not errors:
        cycle = _cycle(items, where)
        if cycle is not None:
            fail(cycle, "enable_when", "enable_when conditions depend on each other.", "cycle")
    return errors


def _check_conditions(
    index: int,
    item: Mapping[str, Any],
    items: Sequence[Mapping[str, Any]],
    where: Mapping[str, int],
    fail: Any,
) -> None:
    for number, condition in enumerate((item.get("enable_when") or {}).get("conditions", [])):
        pointer = f"enable_when/conditions/{number}"
        target = condition["question"]
        if target not in where or target == item["link_id"]:
            fail(index, f"{pointer}/question", "No other item has this link_id.", "not_found")
            continue
        asked = items[where[target]]
        if asked["type"] in ANSWERLESS:
            fail(index, f"{pointer}/question", "A group or display has no answer.", "invalid")
            continue
        op, answer = condition["operator"], condition.get("answer")
        if op == "exists":
            if answer is not None and not isinstance(answer, bool):
                fail(index, f"{pointer}/answer", "`exists` compares with true or false.", "type")
        elif answer is None:
            fail(index, f"{pointer}/answer", "The condition needs an answer.", "required")
        elif op in _ORDER and asked["type"] not in ORDERED:
            fail(index, f"{pointer}/operator", "Only numbers and dates are ordered.", "invalid")


def _check_item(
    index: int, item: Mapping[str, Any], known_prefill: frozenset[str], fail: Any
) -> None:
    kind = item["type"]
    options = item.get("options") or []
    if kind in CHOICES and not options:
        fail(index, "options", "A choice needs options.", "required")
    if kind not in CHOICES and options:
        fail(index, "options", "Only a choice has options.", "invalid")
    if kind in ANSWERLESS:
        for name in ("required", "sensitive"):
            if item.get(name):
                fail(index, name, f"A {kind} has no answer.", "invalid")
    if item.get("prefill") is not None:
        if kind in ANSWERLESS or kind == "attachment":
            fail(index, "prefill", f"A {kind} item is not pre-filled.", "invalid")
        elif item["prefill"] not in known_prefill:
            fail(index, "prefill", "Not a key of the patient's prefill.", "not_found")
    _check_limits(index, item, fail)


def _check_limits(index: int, item: Mapping[str, Any], fail: Any) -> None:
    kind = item["type"]
    low, high = item.get("min"), item.get("max")
    if (low is not None or high is not None) and kind not in BOUNDED:
        fail(index, "min" if low is not None else "max", f"A {kind} has no bounds.", "invalid")
    elif low is not None and high is not None and low > high:
        fail(index, "min", "min is larger than max.", "invalid")
    if item.get("pattern") is not None:
        if kind not in PATTERNED:
            fail(index, "pattern", "Only string and text answers have a pattern.", "invalid")
        else:
            try:
                re2.compile(item["pattern"])
            except re2.error:
                fail(index, "pattern", "Not a valid RE2 pattern.", "pattern")


def _cycle(items: Sequence[Mapping[str, Any]], where: Mapping[str, int]) -> int | None:
    """The index of an item whose enablement depends on itself, if any."""
    edges: dict[int, list[int]] = {}
    for index, item in enumerate(items):
        depends = [
            where[c["question"]] for c in (item.get("enable_when") or {}).get("conditions", [])
        ]
        if item.get("parent_link_id") is not None:
            depends.append(where[item["parent_link_id"]])
        edges[index] = depends
    state: dict[int, int] = {}  # 1 visiting, 2 done

    def visit(node: int) -> int | None:
        state[node] = 1
        for nxt in edges[node]:
            if state.get(nxt) == 1:
                return nxt
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        state[node] = 2
        return None

    for node in edges:
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


# --- answers ------------------------------------------------------------------------------------


def by_link(items: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    return {item["link_id"]: item for item in items}


def check_answer(item: Mapping[str, Any], value: Any) -> str | None:
    """Why `value` does not answer `item`, or None when it does."""
    return _CHECKS[item["type"]](item, value)


def _answerless(item: Mapping[str, Any], _: Any) -> str | None:
    return f"A {item['type']} has no answer."


def _boolean(_: Mapping[str, Any], value: Any) -> str | None:
    return None if isinstance(value, bool) else "Expected true or false."


def _number(item: Mapping[str, Any], value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "Expected a number."
    if item["type"] == "integer" and not float(value).is_integer():
        return "Expected a whole number."
    return _bounded(value, item.get("min"), item.get("max"), "")


def _multi(item: Mapping[str, Any], value: Any) -> str | None:
    if not isinstance(value, list) or len(set(value)) != len(value):
        return "Expected a list of distinct options."
    unknown = [v for v in value if v not in item["options"]]
    if unknown:
        return f"Not an option: {unknown[0]!r}."
    return _bounded(len(value), item.get("min"), item.get("max"), " choices")


def _text(item: Mapping[str, Any], value: Any) -> str | None:
    if not isinstance(value, str):
        return "Expected a string."
    problem = _bounded(len(value), item.get("min"), item.get("max"), " characters")
    if problem is None and item.get("pattern") and re2.search(item["pattern"], value) is None:
        problem = "Does not match the pattern."
    return problem


def _string_as(parse: Any, message: str) -> Any:
    def check(_: Mapping[str, Any], value: Any) -> str | None:
        return None if isinstance(value, str) and _parses(parse, value) else message

    return check


def _choice(item: Mapping[str, Any], value: Any) -> str | None:
    return (
        None if isinstance(value, str) and value in item["options"] else "Not one of the options."
    )


def _instant(value: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(value)
    if "T" not in value or parsed.tzinfo is None:
        raise ValueError(value)
    return parsed


_CHECKS: Mapping[str, Callable[[Mapping[str, Any], Any], str | None]] = {
    "group": _answerless,
    "display": _answerless,
    "boolean": _boolean,
    "integer": _number,
    "decimal": _number,
    "multi-choice": _multi,
    "choice": _choice,
    "string": _text,
    "text": _text,
    "date": _string_as(dt.date.fromisoformat, "Expected a date (YYYY-MM-DD)."),
    "date-time": _string_as(_instant, "Expected a date-time with an offset (RFC 3339)."),
    "attachment": _string_as(uuid.UUID, "Expected an attachment id."),
}


def _bounded(value: float, low: float | None, high: float | None, unit: str) -> str | None:
    if low is not None and value < low:
        return f"At least {low:g}{unit}."
    if high is not None and value > high:
        return f"At most {high:g}{unit}."
    return None


def _parses(parse: Any, value: str) -> bool:
    try:
        parse(value)
    except ValueError:
        return False
    return True


def check_answers(
    items: Sequence[Mapping[str, Any]], answers: Mapping[str, Any], *, at: str
) -> list[FieldError]:
    known = by_link(items)
    errors = []
    for link, value in answers.items():
        pointer = f"{at}/{pointer_token(link)}"
        item = known.get(link)
        if item is None:
            errors.append(FieldError(pointer, "No item has this link_id.", "not_found"))
            continue
        if value is None:
            continue
        problem = check_answer(item, value)
        if problem is not None:
            errors.append(FieldError(pointer, problem, "invalid"))
    return errors


def enabled(items: Sequence[Mapping[str, Any]], answers: Mapping[str, Any]) -> set[str]:
    """The link_ids of the items shown for these answers (the items are free of cycles)."""
    known = by_link(items)
    memo: dict[str, bool] = {}

    def on(link: str) -> bool:
        if link not in memo:
            item = known[link]
            parent = item.get("parent_link_id")
            memo[link] = (parent is None or on(parent)) and _holds(item.get("enable_when"), on)
        return memo[link]

    def _holds(when: Mapping[str, Any] | None, is_on: Any) -> bool:
        if not when:
            return True
        results = [
            _condition(c, answers.get(c["question"]) if is_on(c["question"]) else None)
            for c in when["conditions"]
        ]
        return all(results) if when.get("behavior", "all") == "all" else any(results)

    return {link for link in known if on(link)}


_ORDER: Mapping[str, Any] = {
    ">": operator.gt,
    "<": operator.lt,
    ">=": operator.ge,
    "<=": operator.le,
}


def _condition(condition: Mapping[str, Any], given: Any) -> bool:
    op, expected = condition["operator"], condition.get("answer")
    if op == "exists":
        return (given is not None) == (True if expected is None else bool(expected))
    if given is None:
        return bool(op == "!=")
    if op in ("=", "!="):
        same = expected in given if isinstance(given, list) else given == expected
        return same if op == "=" else not same
    try:
        return bool(_ORDER[op](given, expected))
    except TypeError:
        return False


def submitted(
    items: Sequence[Mapping[str, Any]], answers: Mapping[str, Any]
) -> tuple[dict[str, Any], list[FieldError]]:
    """The answers kept on submit (enabled items only) and the required items left empty."""
    shown = enabled(items, answers)
    kept = {link: value for link, value in answers.items() if link in shown}
    missing = [
        FieldError(
            f"/values/{pointer_token(item['link_id'])}", "An answer is required.", "required"
        )
        for item in items
        if item["link_id"] in shown
        and item.get("required")
        and kept.get(item["link_id"]) in (None, "", [])
    ]
    return kept, missing


def canonical_sha256(document: Any) -> str:
    """SHA-256 of the RFC 8785 (JSON Canonicalization Scheme) form of `document`."""
    return hashlib.sha256(rfc8785.dumps(document)).hexdigest()
