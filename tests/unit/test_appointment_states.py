"""The appointment state machine: the moves allowed, and refusals that name the way forward."""

from __future__ import annotations

import datetime as dt

import pytest

from carebase.errors import AlreadyCancelled, IllegalTransition
from carebase.services import appointment_states as states

NOW = dt.datetime(2026, 12, 7, 9, 0, tzinfo=dt.UTC)
LATER = NOW + dt.timedelta(hours=2)
EARLIER = NOW - dt.timedelta(minutes=5)


def test_a_hold_becomes_the_booking_its_confirmation_rule_asks_for() -> None:
    assert states.booked_state(requires_confirmation=True) == "booked"
    assert states.booked_state(requires_confirmation=False) == "upcoming"
    assert "booked" not in states.allowed("held", requires_confirmation=False)
    assert "upcoming" not in states.allowed("held", requires_confirmation=True)


@pytest.mark.parametrize(
    ("status", "target"),
    [
        ("booked", "upcoming"),
        ("upcoming", "confirmed"),
        ("upcoming", "in_progress"),
        ("confirmed", "in_progress"),
        ("in_progress", "done"),
        ("upcoming", "cancelled"),
        ("done", "entered_in_error"),
    ],
)
def test_the_forward_moves(status: str, target: str) -> None:
    states.check(status, target, requires_confirmation=True, starts_at=LATER, now=NOW)


def test_cancelling_twice_has_its_own_problem() -> None:
    with pytest.raises(AlreadyCancelled):
        states.check(
            "cancelled", "cancelled", requires_confirmation=False, starts_at=LATER, now=NOW
        )


def test_an_illegal_move_names_the_allowed_ones() -> None:
    with pytest.raises(IllegalTransition) as refused:
        states.check("upcoming", "done", requires_confirmation=False, starts_at=LATER, now=NOW)
    assert refused.value.allowed == (
        "confirmed",
        "in_progress",
        "cancelled",
        "no_show",
        "entered_in_error",
    )


def test_cancel_only_before_the_start_and_no_show_only_after() -> None:
    with pytest.raises(IllegalTransition) as started:
        states.check(
            "upcoming", "cancelled", requires_confirmation=False, starts_at=EARLIER, now=NOW
        )
    assert "cancelled" not in started.value.allowed
    with pytest.raises(IllegalTransition) as early:
        states.check("upcoming", "no_show", requires_confirmation=False, starts_at=LATER, now=NOW)
    assert "no_show" not in early.value.allowed
    states.check("confirmed", "no_show", requires_confirmation=False, starts_at=EARLIER, now=NOW)


@pytest.mark.parametrize("status", ["in_progress", "done", "no_show", "entered_in_error"])
def test_what_started_or_ended_cannot_move(status: str) -> None:
    with pytest.raises(IllegalTransition):
        states.check_reschedule(status, requires_confirmation=False)


def test_every_state_has_its_moves_and_only_terminal_ones_have_none() -> None:
    assert set(states.NEXT) == {
        "held",
        "booked",
        "upcoming",
        "confirmed",
        "in_progress",
        "done",
        "cancelled",
        "no_show",
        "entered_in_error",
    }
    assert [s for s, moves in states.NEXT.items() if not moves] == ["entered_in_error"]
    assert all(target in states.NEXT for moves in states.NEXT.values() for target in moves)
