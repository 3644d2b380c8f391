"""The errors Carebase raises. They know nothing of HTTP: `problems.py` maps them to answers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldError:
    """One failing field; `pointer` is a JSON pointer into the request (`/body/name`)."""

    pointer: str
    message: str
    code: str


def pointer_token(token: object) -> str:
    """One JSON pointer reference token (RFC 6901): `~` and `/` escaped."""
    return str(token).replace("~", "~0").replace("/", "~1")


class CarebaseError(Exception):
    """Base of every expected failure. `detail` is safe to show to the caller."""

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or self.__class__.__name__)
        self.detail = detail


class MalformedRequest(CarebaseError):
    """The request cannot be read: broken JSON, non-UTF-8 text, a bad header value."""


class ValidationFailed(CarebaseError):
    """The request is readable but breaks the contract or a business rule; every field is listed."""

    def __init__(self, errors: Sequence[FieldError], detail: str | None = None) -> None:
        count = len(errors)
        super().__init__(detail or f"{count} field{'s' if count != 1 else ''} failed validation.")
        self.errors = tuple(errors)


class Unauthenticated(CarebaseError):
    """No credentials, or credentials that cannot be trusted."""

    def __init__(self, detail: str | None = None, *, credentials_given: bool = True) -> None:
        super().__init__(detail)
        self.credentials_given = credentials_given


class Forbidden(CarebaseError):
    """The caller is known but may not do this."""


class LinkExpired(Forbidden):
    """A signed URL whose time is up."""


class NotFound(CarebaseError):
    """No such resource, or one the caller's organization cannot see: indistinguishable."""


class RouteNotFound(NotFound):
    """No operation is served at this path."""


class MethodNotAllowed(CarebaseError):
    def __init__(self, allowed: Sequence[str], detail: str | None = None) -> None:
        super().__init__(detail)
        self.allowed = tuple(allowed)


class Conflict(CarebaseError):
    """The change collides with the current state (a duplicate, a concurrent request)."""


class AppointmentConflict(Conflict):
    """The time overlaps another active appointment of the specialist (buffers included)."""


class AlreadyCancelled(Conflict):
    """The appointment was cancelled before."""


class IllegalTransition(Conflict):
    """The appointment cannot move to that state from where it is; `allowed` is where it can."""

    def __init__(self, detail: str, *, allowed: Sequence[str]) -> None:
        super().__init__(detail)
        self.allowed = tuple(allowed)


class NoDraft(Conflict):
    """A form template has no draft to publish."""


class FormLocked(Conflict):
    """A form is past the state the change needs (completed, signed, or already amended)."""


class VideoNotReady(Conflict):
    """The appointment has no video room to join (yet, or at all)."""


class UploadIncomplete(Conflict):
    """An attachment is completed before its bytes arrived, or read before it is complete."""


class PreconditionFailed(CarebaseError):
    """`If-Match` names a version that is no longer current."""


class PreconditionRequired(CarebaseError):
    """A change to a versioned resource arrived without `If-Match`."""


class DataIntegrity(CarebaseError):
    """A stored value failed its integrity check (a sealed value that will not open).

    Not the caller's fault and never their data: the detail names neither value nor key.
    """


class PayloadTooLarge(CarebaseError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"The body exceeds the limit of {limit} bytes.")
        self.limit = limit


class UnsupportedMediaType(CarebaseError):
    """The body's media type is not one the operation accepts."""


class RateLimited(CarebaseError):
    def __init__(self, *, limit: int, retry_after: int, detail: str | None = None) -> None:
        super().__init__(detail or "Too many requests; try again later.")
        self.limit = limit
        self.retry_after = retry_after


class DependencyUnavailable(CarebaseError):
    """A service the operation needs (database, Redis) is down or too slow."""

    def __init__(self, detail: str | None = None, *, retry_after: int = 5) -> None:
        super().__init__(detail)
        self.retry_after = retry_after
