from __future__ import annotations

import json

from carebase import errors
from carebase.logging import set_request_id
from carebase.web import problems


def test_subclasses_inherit_their_parent_problem() -> None:
    assert problems.problem_type(errors.RouteNotFound()).status == 404
    assert problems.problem_type(errors.NotFound()).code == "not_found"


def test_every_error_class_has_a_problem_type() -> None:
    def subclasses(cls: type) -> set[type]:
        found = set(cls.__subclasses__())
        for sub in list(found):
            found |= subclasses(sub)
        return found

    for cls in subclasses(errors.CarebaseError):
        assert any(base in problems.TABLE for base in cls.__mro__), cls


def test_rendered_document_shape() -> None:
    set_request_id("req-12345678")
    failure = errors.ValidationFailed([errors.FieldError("/body/name", "Required.", "required")])
    rendered = problems.from_error(failure, instance="/v1/things")
    assert rendered.status == 422
    assert json.loads(rendered.body) == {
        "type": "https://carebase.dev/problems/validation-failed",
        "title": "Request validation failed",
        "status": 422,
        "detail": "1 field failed validation.",
        "instance": "/v1/things",
        "code": "validation_failed",
        "request_id": "req-12345678",
        "errors": [{"pointer": "/body/name", "message": "Required.", "code": "required"}],
    }


def test_a_body_wrong_everywhere_lists_the_first_hundred_and_counts_all() -> None:
    failure = errors.ValidationFailed(
        [errors.FieldError(f"/body/items/{i}", "Bad.", "type") for i in range(250)]
    )
    document = json.loads(problems.from_error(failure, instance="/v1/things").body)
    assert len(document["errors"]) == 100  # Problem.errors' maxItems
    assert document["errors"][0]["pointer"] == "/body/items/0"
    assert document["detail"] == "250 fields failed validation."


def test_rate_limited_carries_retry_headers() -> None:
    rendered = problems.from_error(errors.RateLimited(limit=100, retry_after=7), instance="/x")
    assert rendered.status == 429
    assert rendered.headers == {
        "Retry-After": "7",
        "RateLimit-Limit": "100",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": "7",
    }


def test_method_not_allowed_lists_methods() -> None:
    rendered = problems.from_error(errors.MethodNotAllowed(["GET", "HEAD"]), instance="/x")
    assert rendered.headers == {"Allow": "GET, HEAD"}


def test_unexpected_leaks_nothing() -> None:
    rendered = problems.from_unexpected(ValueError("db password is hunter2"), instance="/x")
    assert rendered.status == 500
    assert b"hunter2" not in rendered.body
    assert b"ValueError" not in rendered.body
