"""An appointment's states and the moves between them.

held → booked → upcoming → confirmed → in_progress → done, with `cancelled` before the
start, `no_show` only after it, and `entered_in_error` (admins) from anywhere. A booking that
needs no confirmation skips `booked`. A cancelled appointment comes back only by being
rescheduled into a free time. Every refusal names the states the appointment may move to.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from carebase.errors import AlreadyCancelled, IllegalTransition

ACTIVE = frozenset({"held", "booked", "upcoming", "confirmed", "in_progress"})
"""The states whose time is blocked (the exclusion constraint's predicate)."""

NEXT: Mapping[str, tuple[str, ...]] = {
    "held": ("booked", "upcoming", "cancelled", "entered_in_error"),
    "booked": ("upcoming", "cancelled", "no_show", "entered_in_error"),
    "upcoming": ("confirmed", "in_progress", "cancelled", "no_show", "entered_in_error"),
    "confirmed": ("in_progress", "cancelled", "no_show", "entered_in_error"),
    "in_progress": ("done", "entered_in_error"),
    "done": ("entered_in_error",),
    "cancelled": ("entered_in_error",),
    "no_show": ("entered_in_error",),
    "entered_in_error": (),
}

# The states an operation moves an appointment from, to where.
RESCHEDULABLE = frozenset({"held", "booked", "upcoming", "confirmed", "cancelled"})
BEFORE_START = frozenset({"cancelled"})
AFTER_START = frozenset({"no_show"})


def booked_state(requires_confirmation: bool) -> str:
    """Where a new booking (or a hold being booked) lands."""
    return "booked" if requires_confirmation else "upcoming"


def allowed(status: str, *, requires_confirmation: bool) -> tuple[str, ...]:
    """The states `status` may move to, as shown to clients."""
    found = NEXT.get(status, ())
    if status == "held":  # a hold becomes one of the two, as the booking needs confirmation
        other = "upcoming" if requires_confirmation else "booked"
        found = tuple(s for s in found if s != other)
    return found


def check(
    status: str,
    target: str,
    *,
    requires_confirmation: bool,
    starts_at: dt.datetime,
    now: dt.datetime,
) -> None:
    """Raise unless `status` may move to `target` now."""
    if target == "cancelled" and status == "cancelled":
        raise AlreadyCancelled("The appointment was cancelled already.")
    options = allowed(status, requires_confirmation=requires_confirmation)
    if target not in options:
        raise IllegalTransition(
            f"{_article(status)} {_label(status)} appointment cannot become {_label(target)}.",
            allowed=options,
        )
    if target in BEFORE_START and now >= starts_at:
        raise IllegalTransition(
            "It has started: mark it no_show, in progress or done instead.",
            allowed=[s for s in options if s not in BEFORE_START],
        )
    if target in AFTER_START and now < starts_at:
        raise IllegalTransition(
            "It has not started yet: it can be a no-show only after its start.",
            allowed=[s for s in options if s not in AFTER_START],
        )


def check_reschedule(status: str, *, requires_confirmation: bool) -> None:
    if status not in RESCHEDULABLE:
        raise IllegalTransition(
            f"{_article(status)} {_label(status)} appointment cannot move.",
            allowed=allowed(status, requires_confirmation=requires_confirmation),
        )


def _article(status: str) -> str:
    return "An" if status[0] in "aeiou" else "A"


def _label(status: str) -> str:
    return status.replace("_", " ")
