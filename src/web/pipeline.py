"""The per-operation plan: compiled once at start-up from the bundle and the handler, run per
request behind Connexion's routing.

authentication → rate limit → authorization → parameters → body → idempotency → handler →
response bytes. Each step is decided at compile time — an operation with `security: []`
has no authentication step, one with `x-rate-limit: false` no Redis call, one without a body
no body reader — so a request runs only what its operation needs. The handler's signature is
checked against the contract at start-up: every parameter it must take, typed as the schema
says, and the body model the contract names.
"""

from __future__ import annotations

import hashlib
import inspect
import ipaddress
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from pydantic import BaseModel
from pydantic import ValidationError as PydanticError
from starlette.types import Receive, Scope

from carebase.errors import FieldError, Forbidden, RateLimited, ValidationFailed, pointer_token
from carebase.logging import set_actor
from carebase.principal import Origin, Principal
from carebase.security import permissions
from carebase.security.auth import Authenticates
from carebase.security.events import SecurityEvents
from carebase.security.ratelimit import RateLimiter, Rule
from carebase.web import etags, render
from carebase.web.bodies import JsonBody, Upload, body_reader, read_body
from carebase.web.conformance import ResponseCheck
from carebase.web.contract import Contract, Operation
from carebase.web.idempotency import IdempotencyKeys
from carebase.web.parameters import Parameters, python_name
from carebase.web.results import Reply, Stream
from carebase.web.signatures import Handler, check_annotation
from carebase.web.wire import Headers, Rendered

# Headers the pipeline reads itself; a handler may still ask for them.
CONSUMED = frozenset({"if_none_match", "idempotency_key"})

_log = structlog.get_logger("carebase.pipeline")


@dataclass(frozen=True, slots=True)
class Runtime:
    """What every plan shares at run time."""

    authenticator: Authenticates
    limiter: RateLimiter
    default_rule: Rule
    idempotency: IdempotencyKeys | None
    validate_responses: bool = False
    security: SecurityEvents | None = None
    """Where refusals worth an operator's eye go (permission denials, rate limiting)."""
    actors_in_logs: bool = True
    """False: log lines name the kind of caller (`user`, `service`), never their id
    (telemetry keeps actor ids out of every store and log)."""


def compile_plans(
    contract: Contract, handlers: Mapping[str, Handler], runtime: Runtime
) -> dict[str, Plan]:
    missing = sorted(set(contract.operations) - set(handlers))
    if missing:
        raise RuntimeError(f"no handler for operationId(s) {', '.join(missing)}")
    unknown = sorted(set(handlers) - set(contract.operations))
    if unknown:
        raise RuntimeError(f"handler(s) for operationId(s) the contract lacks: {unknown}")
    if runtime.idempotency is None:
        idempotent = sorted(o.operation_id for o in contract.operations.values() if o.idempotent)
        if idempotent:
            raise RuntimeError(f"no idempotency store for idempotent operation(s) {idempotent}")
    return {
        op_id: Plan(operation, handlers[op_id], runtime)
        for op_id, operation in contract.operations.items()
    }


_addresses: dict[str, str | None] = {}


def _client_ip(host: str) -> str | None:
    """The client's address when it is one (a unix socket or a test client has none)."""
    if host in _addresses:
        return _addresses[host]
    try:
        found: str | None = str(ipaddress.ip_address(host))
    except ValueError:
        found = None
    if len(_addresses) >= 4096:
        _addresses.clear()
    _addresses[host] = found
    return found


class Plan:
    """One operation, ready to run: `run(scope, receive)` → the answer in wire form."""

    __slots__ = (
        "authenticated",
        "body",
        "body_model",
        "bucket",
        "conditional",
        "handler",
        "head_ok",
        "if_match",
        "operation",
        "parameters",
        "permission",
        "responses",
        "rule",
        "runtime",
        "wanted",
        "wants_body",
        "wants_principal",
        "wants_raw_body",
    )

    def __init__(self, operation: Operation, handler: Handler, runtime: Runtime) -> None:
        self.operation = operation
        self.handler = handler
        self.runtime = runtime
        self.authenticated = not operation.public
        self.permission = operation.permission
        if operation.rate_limit is False:
            self.rule: Rule | None = None
        elif operation.rate_limit is None:
            self.rule = runtime.default_rule
        else:
            self.rule = Rule.from_extension(operation.rate_limit)
        self.bucket = operation.operation_id if operation.rate_limit else "default"
        self.body = body_reader(operation.body) if operation.body is not None else None
        accepted = self._accepted(handler)
        self.wants_principal = "principal" in accepted
        self.wants_body = "body" in accepted
        # The body's exact bytes too, for a handler that checks a signature over them.
        self.wants_raw_body = "raw_body" in accepted
        self.body_model = self._body_model(accepted.get("body"))
        self.parameters = Parameters(
            operation, keep=frozenset(accepted) - {"principal", "body", "raw_body"}
        )
        self.if_match = "if_match" in accepted
        self.conditional = operation.method == "GET" and any(
            p.location == "header" and p.name.lower() == "if-none-match"
            for p in operation.parameters
        )
        self.head_ok = operation.method == "GET"
        # The request headers this operation reads; the others are never decoded.
        self.wanted = frozenset(
            {b"authorization", b"x-api-key", b"content-type", b"user-agent"}
            | {b"idempotency-key", b"if-none-match"}
            | {p.name.lower().encode() for p in operation.parameters if p.location == "header"}
        )
        self.responses = ResponseCheck(operation) if runtime.validate_responses else None

    # --- compile-time checks ------------------------------------------------------------------

    def _accepted(self, handler: Handler) -> dict[str, Any]:
        """The handler's keyword parameters and their annotations, checked against the contract."""
        name = f"{self.operation.operation_id} ({getattr(handler, '__qualname__', handler)})"
        hints = typing.get_type_hints(handler)
        accepted = {
            p: hints.get(p, Any)
            for p in inspect.signature(handler).parameters
            if p not in ("self", "return")
        }
        declared = {python_name(p.name): p for p in self.operation.parameters}
        for key in accepted:
            if key in ("principal", "body"):
                continue
            if key == "raw_body" and self.operation.body is not None:
                continue
            if key not in declared:
                raise RuntimeError(f"{name} takes {key!r}, which the contract does not declare")
        for key, parameter in declared.items():
            if key not in accepted and key not in CONSUMED:
                raise RuntimeError(f"{name} must take the {parameter.location} parameter {key!r}")
            if key in accepted:
                check_annotation(name, key, parameter.schema, accepted[key])
        if self.operation.body is not None and "body" not in accepted:
            raise RuntimeError(f"{name} must take the request body as `body`")
        if "body" in accepted and self.operation.body is None:
            raise RuntimeError(f"{name} takes a body the contract does not declare")
        return accepted

    def _body_model(self, annotation: Any) -> type[BaseModel] | None:
        if not (inspect.isclass(annotation) and issubclass(annotation, BaseModel)):
            return None
        named = self.operation.body.schema_name if self.operation.body else None
        if named is not None and annotation.__name__ != named:
            raise RuntimeError(
                f"{self.operation.operation_id}: the body is {named} in the contract, "
                f"but the handler reads it as {annotation.__name__}"
            )
        return annotation

    # --- per request --------------------------------------------------------------------------

    async def run(self, scope: Scope, receive: Receive, request_id: str) -> Rendered:
        wanted = self.wanted
        headers = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in wanted
        }
        runtime = self.runtime
        if self.authenticated:
            principal = await runtime.authenticator.authenticate(
                headers.get("authorization"), headers.get("x-api-key")
            )
            # In the access line and every log line from here on.
            set_actor(principal.actor if runtime.actors_in_logs else _kind(principal))
        else:
            principal = Principal.anonymous()
        limit_headers = await self._admit(scope, principal, request_id)
        kwargs = self.parameters.parse(
            scope.get("path_params") or {}, scope["query_string"], headers
        )
        document: Any = None
        body = self.body
        if body is not None:
            raw = await read_body(receive)
            if isinstance(body, JsonBody):
                document = body.parse(headers.get("content-type"), raw)
                kwargs["body"] = self._model(document) if self.body_model else document
                if self.wants_raw_body:
                    kwargs["raw_body"] = raw
            else:
                read = await body.read(headers.get("content-type"), raw)
                kwargs["body"] = read
                # An idempotency key remembers a digest of bytes, never the bytes.
                document = (
                    read.fingerprint()
                    if isinstance(read, Upload)
                    else {"sha256": hashlib.sha256(read or b"").hexdigest()}
                )
        if self.if_match and kwargs["if_match"] is not None:
            kwargs["if_match"] = etags.expected_version(kwargs["if_match"])
        if self.wants_principal or self.operation.idempotent:
            client = scope.get("client")
            agent = headers.get("user-agent")
            principal = principal.with_origin(
                Origin(
                    request_id=request_id,
                    ip=_client_ip(client[0]) if client else None,
                    user_agent=agent[:512] if agent else None,
                )
            )
            if self.wants_principal:
                kwargs["principal"] = principal
        key = headers.get("idempotency-key") if self.operation.idempotent else None
        if key is None or runtime.idempotency is None:
            rendered = await self._answer(kwargs, scope, headers)
        else:
            rendered = await runtime.idempotency.run(
                principal,
                key=key,
                operation_id=self.operation.operation_id,
                path=scope["path"],
                document=document,
                answer=lambda: self._answer(kwargs, scope, headers),
            )
        if limit_headers:
            rendered.headers += limit_headers
        return rendered

    async def _admit(self, scope: Scope, principal: Principal, request_id: str) -> Headers | None:
        """The rate limit, then the permission; each refusal is a security event too."""
        try:
            limit_headers = await self._limit(scope, principal) if self.rule is not None else None
        except RateLimited:
            self._security_event("rate_limited", scope, principal, request_id)
            raise
        if self.authenticated and (
            self.permission is None or not permissions.allows(principal, self.permission)
        ):
            self._security_event("permission_denied", scope, principal, request_id)
            raise Forbidden(f"This operation needs the permission {self.permission!r}.")
        return limit_headers

    def _security_event(
        self, kind: str, scope: Scope, principal: Principal, request_id: str
    ) -> None:
        """Once a minute per caller and operation: a flood is one event, not thousands."""
        security = self.runtime.security
        if security is None:
            return
        client = scope.get("client")
        ip = _client_ip(client[0]) if client else None
        who = str(principal.user_id or principal.api_key_id or ip)
        security.record(
            kind,
            organization_id=principal.organization_id,
            actor_user_id=principal.user_id,
            ip=ip,
            request_id=request_id,
            detail={"operation": self.operation.operation_id, "role": principal.role},
            once_per_s=60,
            once_key=(who, self.operation.operation_id),
        )

    def _model(self, document: Any) -> BaseModel:
        """The body as the generated model. The contract's validator ran first; pydantic is
        stricter on a few formats (email, date-time), and its findings get pointers too."""
        assert self.body_model is not None  # noqa: S101 - only called when compiled with one
        try:
            return self.body_model.model_validate(document)
        except PydanticError as exc:
            raise ValidationFailed(
                [
                    FieldError(
                        "/body" + "".join(f"/{pointer_token(part)}" for part in error["loc"]),
                        error["msg"][:512],
                        "format"
                        if error["type"].endswith(("email", "datetime"))
                        else error["type"],
                    )
                    for error in exc.errors()
                ]
            ) from None

    async def _limit(self, scope: Scope, principal: Principal) -> Headers | None:
        rule = self.rule
        assert rule is not None  # noqa: S101 - only called when compiled with one
        decision = await self.runtime.limiter.check(
            self.operation.operation_id, self.bucket, _identity(scope, principal, rule), rule
        )
        if decision is None:
            return None
        return [
            (b"ratelimit-limit", str(decision.limit).encode()),
            (b"ratelimit-remaining", str(decision.remaining).encode()),
            (b"ratelimit-reset", str(decision.reset_s).encode()),
        ]

    async def _answer(
        self, kwargs: dict[str, Any], scope: Scope, headers: Mapping[str, str]
    ) -> Rendered:
        reply = await self.handler(**kwargs)
        if self.conditional and reply.version is not None:
            wanted = headers.get("if-none-match")
            if wanted is not None and etags.matches_any(wanted, reply.version):
                return Rendered(304, [(b"etag", etags.etag(reply.version).encode())], b"")
        rendered = _render(reply)
        if self.responses is not None:
            self.responses.check(rendered)
        if scope["method"] == "HEAD":
            rendered.body = b""
        return rendered


def _render(reply: Reply) -> Rendered:
    body = reply.body
    if isinstance(body, Stream):
        return Rendered(reply.status, _headers(reply, None), b"", stream=body.chunks)
    if body is None:
        payload = b""
    elif isinstance(body, bytes):
        payload = body
    else:
        payload = render.dumps(body)
    return Rendered(reply.status, _headers(reply, payload), payload)


def _headers(reply: Reply, payload: bytes | None) -> Headers:
    """The answer's headers; no Content-Length for a stream (`payload` None)."""
    out: Headers = []
    if reply.body is not None:
        out.append((b"content-type", reply.media_type.encode()))
    if payload is not None:
        out.append((b"content-length", str(len(payload)).encode()))
    if reply.version is not None:
        out.append((b"etag", etags.etag(reply.version).encode()))
    if reply.location is not None:
        out.append((b"location", reply.location.encode()))
    if reply.headers:
        out += [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers.items()
        ]
    return out


def _kind(principal: Principal) -> str:
    if principal.user_id is not None:
        return "user"
    return principal.role or "anonymous"


def _identity(scope: Scope, principal: Principal, rule: Rule) -> str:
    """The caller to count: the principal's user or organization when known, else the IP."""
    if rule.key == "user" and principal.user_id:
        return f"user:{principal.user_id}"
    if rule.key == "organization" and principal.organization_id:
        return f"org:{principal.organization_id}"
    client = scope.get("client") or ("unknown", 0)
    return f"ip:{client[0]}"
