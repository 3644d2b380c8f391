"""The one table from error to problem type, and the one renderer of RFC 9457 problems."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from carebase import errors
from carebase.logging import current_request_id

MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://carebase.dev/problems/"


@dataclass(frozen=True, slots=True)
class ProblemType:
    status: int
    slug: str
    title: str

    @property
    def code(self) -> str:
        return self.slug.replace("-", "_")


TABLE: Mapping[type[errors.CarebaseError], ProblemType] = {
    errors.MalformedRequest: ProblemType(400, "bad-request", "Bad request"),
    errors.Unauthenticated: ProblemType(401, "unauthenticated", "Authentication required"),
    errors.Forbidden: ProblemType(403, "forbidden", "Forbidden"),
    errors.LinkExpired: ProblemType(403, "link-expired", "The link has expired"),
    errors.NotFound: ProblemType(404, "not-found", "Not found"),
    errors.MethodNotAllowed: ProblemType(405, "method-not-allowed", "Method not allowed"),
    errors.Conflict: ProblemType(409, "conflict", "Conflict"),
    errors.AppointmentConflict: ProblemType(
        409, "appointment-conflict", "The time overlaps another appointment"
    ),
    errors.AlreadyCancelled: ProblemType(409, "already-cancelled", "Already cancelled"),
    errors.IllegalTransition: ProblemType(
        409, "illegal-transition", "Not allowed from the appointment's state"
    ),
    errors.NoDraft: ProblemType(409, "no-draft", "No draft to publish"),
    errors.FormLocked: ProblemType(409, "form-locked", "Not allowed in the form's state"),
    errors.VideoNotReady: ProblemType(409, "video-not-ready", "No video room to join"),
    errors.UploadIncomplete: ProblemType(409, "upload-incomplete", "The upload is not complete"),
    errors.PreconditionFailed: ProblemType(412, "precondition-failed", "Precondition failed"),
    errors.PayloadTooLarge: ProblemType(413, "payload-too-large", "Payload too large"),
    errors.UnsupportedMediaType: ProblemType(
        415, "unsupported-media-type", "Unsupported media type"
    ),
    errors.ValidationFailed: ProblemType(422, "validation-failed", "Request validation failed"),
    errors.PreconditionRequired: ProblemType(428, "precondition-required", "Precondition required"),
    errors.RateLimited: ProblemType(429, "rate-limited", "Too many requests"),
    errors.DataIntegrity: ProblemType(
        500, "data-integrity", "Stored data failed an integrity check"
    ),
    errors.DependencyUnavailable: ProblemType(503, "service-unavailable", "Service unavailable"),
}
INTERNAL = ProblemType(500, "internal", "Internal server error")
MAX_FIELD_ERRORS = 100  # Problem.errors' maxItems in openapi/common.yaml
NOT_READY = ProblemType(503, "not-ready", "Service not ready")

_log = structlog.get_logger("carebase.web.problems")


@dataclass(frozen=True, slots=True)
class RenderedProblem:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def problem_type(error: errors.CarebaseError) -> ProblemType:
    for cls in type(error).__mro__:
        found = TABLE.get(cls)
        if found is not None:
            return found
    return INTERNAL


def render(
    kind: ProblemType,
    *,
    instance: str | None,
    detail: str | None = None,
    field_errors: Sequence[errors.FieldError] = (),
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> RenderedProblem:
    """Build the problem document; every problem Carebase sends comes through here."""
    document: dict[str, Any] = {
        "type": TYPE_BASE + kind.slug,
        "title": kind.title,
        "status": kind.status,
    }
    if detail:
        document["detail"] = detail
    if instance:
        document["instance"] = instance
    document["code"] = kind.code
    document["request_id"] = current_request_id()
    if field_errors:
        # The contract bounds `errors` (maxItems): a body wrong in hundreds of places gets the
        # first MAX_FIELD_ERRORS, and `detail` still counts them all.
        document["errors"] = [
            {"pointer": e.pointer, "message": e.message, "code": e.code}
            for e in field_errors[:MAX_FIELD_ERRORS]
        ]
    if extra:
        document.update(extra)
    body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
    return RenderedProblem(kind.status, body, dict(headers or {}))


def from_error(error: errors.CarebaseError, *, instance: str | None) -> RenderedProblem:
    kind = problem_type(error)
    headers: dict[str, str] = {}
    field_errors: Sequence[errors.FieldError] = ()
    extra: dict[str, Any] = {}
    if isinstance(error, errors.ValidationFailed):
        field_errors = error.errors
    elif isinstance(error, errors.MethodNotAllowed):
        headers["Allow"] = ", ".join(error.allowed)
    elif isinstance(error, errors.RateLimited):
        headers["Retry-After"] = str(error.retry_after)
        headers["RateLimit-Limit"] = str(error.limit)
        headers["RateLimit-Remaining"] = "0"
        headers["RateLimit-Reset"] = str(error.retry_after)
    elif isinstance(error, errors.DependencyUnavailable):
        headers["Retry-After"] = str(error.retry_after)
    elif isinstance(error, errors.DataIntegrity):
        _log.error("data_integrity", path=instance, cause=repr(error.__cause__))
    elif isinstance(error, errors.IllegalTransition):
        extra["allowed_transitions"] = list(error.allowed)
    elif isinstance(error, errors.Unauthenticated):
        # RFC 6750 §3: no error code when no credentials came at all.
        challenge = 'Bearer realm="carebase"'
        if error.credentials_given:
            challenge += ', error="invalid_token"'
        headers["WWW-Authenticate"] = challenge
    return render(
        kind,
        instance=instance,
        detail=error.detail,
        field_errors=field_errors,
        headers=headers,
        extra=extra or None,
    )


def from_unexpected(exc: BaseException, *, instance: str | None) -> RenderedProblem:
    """An unplanned failure: logged with its traceback, answered with the request id only."""
    _log.error("unhandled_exception", path=instance, exc_info=exc)
    return render(INTERNAL, instance=instance, detail="The failure has been logged.")
