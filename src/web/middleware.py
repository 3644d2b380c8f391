"""The ASGI layers around Connexion, outermost first:

request id → problem recovery → security headers → access log → attack blocker → body limit.

Each is a plain ASGI callable (no per-request object graph) because every request pays for it.
A layer that rejects a request renders its answer through `problems`.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterable

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from carebase.errors import MalformedRequest, PayloadTooLarge, RouteNotFound
from carebase.logging import set_request_id
from carebase.principal import Principal
from carebase.web import problems

ROUTING_EXTENSION = "connexion_routing"  # set by Connexion's RoutingMiddleware on the scope
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{8,128}")

_access_log = structlog.get_logger("carebase.access")
_security_log = structlog.get_logger("carebase.security")


def operation_id(scope: Scope) -> str | None:
    """The operationId Connexion routed this request to (None before routing, or unrouted)."""
    routing = (scope.get("extensions") or {}).get(ROUTING_EXTENSION) or {}
    found = routing.get("operation_id")
    return str(found) if found else None


def principal_of(scope: Scope) -> Principal:
    """Who authentication said is calling; anonymous before it ran or where it did not."""
    principal = (scope.get("state") or {}).get("principal")
    return principal if isinstance(principal, Principal) else Principal.anonymous()


async def send_problem(send: Send, problem: problems.RenderedProblem) -> None:
    headers = [(b"content-type", problems.MEDIA_TYPE.encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in problem.headers.items()]
    headers.append((b"content-length", str(len(problem.body)).encode()))
    await send({"type": "http.response.start", "status": problem.status, "headers": headers})
    await send({"type": "http.response.body", "body": problem.body})


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of a request header (`name` in lower case), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


class HttpLayer:
    """An ASGI layer that acts on HTTP requests and passes lifespan and websocket through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.handle(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class RequestId(HttpLayer):
    """Accepts a sane `X-Request-ID` or makes one; echoes it and puts it in every log line."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        given = header(scope, b"x-request-id")
        request_id = given if given and _SANE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        set_request_id(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        echoed = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), echoed]
            await send(message)

        await self.app(scope, receive, send_with_id)


class ProblemRecovery(HttpLayer):
    """The last net: whatever escapes the layers inside becomes a 500 problem, never a trace."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            problem = problems.from_unexpected(exc, instance=scope.get("path"))
            if started:
                return  # Too late to answer; the client sees a cut response and the log has it.
            await send_problem(send, problem)


API_CSP = b"default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
# Swagger UI is static files plus one inline bootstrap script.
UI_CSP = (
    b"default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    b"img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


class SecurityHeaders(HttpLayer):
    def __init__(self, app: ASGIApp, *, ui_prefix: str = "/ui") -> None:
        super().__init__(app)
        self.ui_prefix = ui_prefix

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        is_ui = scope["path"] == self.ui_prefix or scope["path"].startswith(self.ui_prefix + "/")
        added = [
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"no-referrer"),
            (b"cross-origin-resource-policy", b"same-origin"),
            (b"content-security-policy", UI_CSP if is_ui else API_CSP),
        ]
        names = {name for name, _ in added}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                # API answers are not cached unless the handler chose a policy (e.g. JWKS).
                if not is_ui and not any(k.lower() == b"cache-control" for k, _ in kept):
                    kept.append((b"cache-control", b"no-store"))
                message["headers"] = kept + added
            await send(message)

        await self.app(scope, receive, send_with_headers)


class AccessLog(HttpLayer):
    """One JSON line a request: method, route template, status, duration."""

    def __init__(self, app: ASGIApp, *, route_for: Callable[[str | None], str | None]) -> None:
        super().__init__(app)
        self.route_for = route_for

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope.setdefault("extensions", {})  # Connexion writes its routing result here.
        started = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = self.route_for(operation_id(scope))
            log = _access_log.error if status >= 500 else _access_log.info
            log(
                "request",
                method=scope["method"],
                route=route,
                path=None if route else scope["path"],
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
            )


# Probes for secrets, admin panels of other products, and path traversal.
_ATTACK_PATH = re.compile(
    r"(^|/)(\.env|\.git|\.svn|\.hg|\.htaccess|\.htpasswd|\.ds_store|wp-admin|wp-login\.php|"
    r"wp-content|xmlrpc\.php|phpmyadmin|cgi-bin|server-status)(/|$|\.)"
    r"|(^|/)\.\.(/|$)|%2e%2e|%252e|\\|\x00|/etc/passwd",
    re.IGNORECASE,
)


class AttackBlocker(HttpLayer):
    """Scanner noise answers a fast 404 and a security event, and never reaches the router."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path") or scope["path"].encode()
        target = raw.decode("latin-1")
        if _ATTACK_PATH.search(target) or _ATTACK_PATH.search(scope["path"]):
            client = scope.get("client") or ("", 0)
            _security_log.warning(
                "security_event",
                kind="attack_path",
                path=target[:512],
                ip=client[0],
                user_agent=(header(scope, b"user-agent") or "")[:256],
            )
            error = RouteNotFound("No operation is served at this path.")
            await send_problem(send, problems.from_error(error, instance=None))
            return
        await self.app(scope, receive, send)


class BodyLimit(HttpLayer):
    """Refuses bodies over the limit: by `Content-Length` up front, by counting a chunked one.

    A chunked body (no `Content-Length`) is read here, within the limit, and passed on with
    its length: Connexion treats a request without `Content-Length` as having no body at all
    (spec-first/connexion#2020).
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        super().__init__(app)
        self.max_bytes = max_bytes

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = header(scope, b"content-length")
        rejection: MalformedRequest | PayloadTooLarge | None = None
        if declared is not None and not declared.isdigit():
            rejection = MalformedRequest("Content-Length must be a non-negative integer.")
        elif declared is not None and int(declared) > self.max_bytes:
            rejection = PayloadTooLarge(self.max_bytes)
        elif declared is None and header(scope, b"transfer-encoding"):
            body, too_large = await self._read_chunked(receive)
            if too_large:
                rejection = PayloadTooLarge(self.max_bytes)
            else:
                scope = dict(scope)
                scope["headers"] = [
                    *scope["headers"],
                    (b"content-length", str(len(body)).encode()),
                ]
                receive = _replay(body, receive)
        if rejection is not None:
            await send_problem(send, problems.from_error(rejection, instance=scope["path"]))
            return
        await self.app(scope, receive, send)

    async def _read_chunked(self, receive: Receive) -> tuple[bytes, bool]:
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return b"", True
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks), False


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def stack(app: ASGIApp, layers: Iterable[Callable[[ASGIApp], ASGIApp]]) -> ASGIApp:
    """Wrap `app` in `layers`, given outermost first."""
    for layer in reversed(list(layers)):
        app = layer(app)
    return app
