"""The one outer layer every request passes, as a single ASGI callable.

request id → recovery → security headers → attack blocker → body limit → access log, then
the committed spec documents, Swagger UI under `/ui`, or Connexion's routing into the
compiled plans. It used to be six stacked layers each wrapping `send`; now one `Exchange`
per request carries the request id, the status and the actor, and adds the edge's headers
once, when the answer is sent.

- **Request id**: a sane `X-Request-ID` is kept, otherwise one is made; echoed, in every log
  line and in every problem.
- **Recovery**: a `CarebaseError` becomes its problem; anything else a logged 500 problem
  that leaks nothing. Starlette's 405 becomes the contract's.
- **Security headers**: `nosniff`, frame deny, no referrer, a strict CSP (Swagger UI gets its
  own), and `Cache-Control: no-store` unless the answer chose a policy.
- **Attack blocker**: scanner probes (`/.env`, `/.git`, `/wp-admin`, traversal) get a fast 404
  and a security event, and never reach the router.
- **Body limit**: a declared `Content-Length` over `MAX_BODY_BYTES` (or over the operation's
  own `x-max-body-bytes`, an upload's) gets 413 at once; a chunked body is read within it.
  The refused body is drained (up to `DRAIN_BYTES`, for at most `DRAIN_S`) while the 413 is
  already on its way, so a client that sends the whole body before reading reads the 413
  instead of a connection reset.
- **Access log**: one JSON line per request — method, route template, status, duration,
  request id, actor, trace and span ids — rendered by orjson and written with one `write`.
- **CORS** (CORS_ALLOWED_ORIGINS): preflights answered here, and the allowed origin's headers
  on every answer to it (`cors.Cors`).
- **Metrics**: requests in flight, and each request's duration by operationId (or
  `unmatched`: a path no operation serves never becomes a label of its own), method and
  status (`carebase.metrics`).
- **Tracing** (when the process has a tracer, `carebase.tracing`): one server span per
  request, a child of the caller's `traceparent`, named by method and the route template the
  router matched (never the raw path); current while the request runs, so database, Redis
  and httpx spans nest beneath it and log lines carry its ids.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator, Callable

import structlog
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from carebase import metrics, tracing
from carebase.errors import (
    CarebaseError,
    MalformedRequest,
    MethodNotAllowed,
    PayloadTooLarge,
    RouteNotFound,
)
from carebase.logging import current_actor, set_request_id
from carebase.security.events import SecurityEvents
from carebase.web import problems
from carebase.web.accesslog import AccessLog
from carebase.web.contract import Contract
from carebase.web.cors import Cors
from carebase.web.routing import EXCHANGE, unrouted
from carebase.web.wire import Headers, Rendered

_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{8,128}")
DRAIN_BYTES = 64 * 1024 * 1024
DRAIN_S = 10.0

API_CSP = b"default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
# Swagger UI is static files plus one inline bootstrap script.
UI_CSP = (
    b"default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    b"img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
_COMMON = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
)
API_HEADERS = (*_COMMON, (b"content-security-policy", API_CSP))
UI_HEADERS = (*_COMMON, (b"content-security-policy", UI_CSP))
_EDGE_NAMES = frozenset(name for name, _ in API_HEADERS)
NO_STORE = (b"cache-control", b"no-store")

# Probes for secrets, admin panels of other products, and path traversal; matched against the
# lower-cased path (cheaper than IGNORECASE, and the same for these ASCII patterns).
_ATTACK_PATH = re.compile(
    r"(^|/)(\.env|\.git|\.svn|\.hg|\.htaccess|\.htpasswd|\.ds_store|wp-admin|wp-login\.php|"
    r"wp-content|xmlrpc\.php|phpmyadmin|cgi-bin|server-status)(/|$|\.)"
    r"|(^|/)\.\.(/|$)|%2e%2e|%252e|\\|\x00|/etc/passwd"
)


def is_probe(path: str, raw_path: bytes | None) -> bool:
    """Whether the decoded path, or the raw one where it differs, looks like a probe."""
    if _ATTACK_PATH.search(path.lower()):
        return True
    raw = raw_path.decode("latin-1") if raw_path else path
    return raw != path and _ATTACK_PATH.search(raw.lower()) is not None


_security_log = structlog.get_logger("carebase.security")


class Exchange:
    """One request as the edge sees it; the dispatcher answers through `respond`."""

    __slots__ = (
        "cors",
        "label",
        "operation_id",
        "request_id",
        "send",
        "started",
        "status",
        "ui",
    )

    def __init__(self, request_id: str, send: Send, *, ui: bool) -> None:
        self.request_id = request_id
        self.send = send
        self.ui = ui
        self.status = 500
        self.started = False
        self.operation_id: str | None = None
        self.label = metrics.UNMATCHED
        """The metrics' `operation` label: the operationId once routed."""
        self.cors: Headers = []
        """CORS headers every answer carries (`cors.Cors.answer_headers`)."""

    def _headers(self, headers: Headers) -> Headers:
        if self.ui:
            kept = [(k, v) for k, v in headers if k not in _EDGE_NAMES]
            kept += UI_HEADERS
        else:
            kept = [(k, v) for k, v in headers if k not in _EDGE_NAMES]
            if not any(k == b"cache-control" for k, _ in kept):
                kept.append(NO_STORE)
            kept += API_HEADERS
        kept += self.cors
        kept.append((b"x-request-id", self.request_id.encode()))
        return kept

    async def respond(self, rendered: Rendered, *, more_body: bool = False) -> None:
        self.status = rendered.status
        self.started = True
        await self.send(
            {
                "type": "http.response.start",
                "status": rendered.status,
                "headers": self._headers(rendered.headers),
            }
        )
        if rendered.stream is not None:
            await self._stream(rendered.stream)
            return
        await self.send(
            {"type": "http.response.body", "body": rendered.body, "more_body": more_body}
        )

    async def _stream(self, chunks: AsyncIterator[bytes]) -> None:
        """Each chunk as it comes. Should the producer fail, the exception goes up without
        the final empty chunk: the server then cuts the connection, and the client sees an
        incomplete body rather than a short file that looks whole."""
        try:
            async for chunk in chunks:
                if chunk:
                    await self.send(
                        {"type": "http.response.body", "body": chunk, "more_body": True}
                    )
        finally:
            closing = getattr(chunks, "aclose", None)
            if closing is not None:
                await closing()
        await self.send({"type": "http.response.body", "body": b"", "more_body": False})

    async def forward(self, message: Message) -> None:
        """For apps that send ASGI messages themselves (Swagger UI's static files)."""
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.started = True
            message["headers"] = self._headers(
                [(k.lower(), v) for k, v in message.get("headers", [])]
            )
        await self.send(message)


def _span(tracer: tracing.Tracer, scope: Scope) -> tracing.Span:
    """The request's server span, a child of the caller's `traceparent` when one came."""
    attributes = {
        "http.request.method": scope["method"],
        "url.path": scope["path"][:512],
        "url.scheme": scope.get("scheme", "http"),
    }
    client = scope.get("client")
    if client:
        attributes["client.address"] = client[0]
    return tracer.start_span(
        scope["method"],
        context=tracing.extract(scope["headers"]),
        kind=tracing.SpanKind.SERVER,
        attributes=attributes,
    )


def _end_span(
    span: tracing.Span, method: str, route: str | None, status: int, request_id: str
) -> None:
    """Name the span by the route template the router matched (a path that matched none keeps
    the method alone: raw paths would make every id its own span name)."""
    span.set_attribute("carebase.request_id", request_id)
    if route is not None:
        span.update_name(f"{method} {route}")
        span.set_attribute("http.route", route)
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(tracing.Status(tracing.StatusCode.ERROR))
    span.end()


def problem_of(error: CarebaseError, path: str | None) -> Rendered:
    return rendered_problem(problems.from_error(error, instance=path))


def rendered_problem(problem: problems.RenderedProblem) -> Rendered:
    headers: Headers = [(b"content-type", problems.MEDIA_TYPE.encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in problem.headers.items()]
    headers.append((b"content-length", str(len(problem.body)).encode()))
    return Rendered(problem.status, headers, problem.body)


class Edge:
    def __init__(
        self,
        *,
        contract: Contract,
        router: ASGIApp,
        ui: ASGIApp,
        max_body_bytes: int,
        access_log: AccessLog,
        security: SecurityEvents | None = None,
        tracer: tracing.Tracer | None = None,
        cors: Cors | None = None,
    ) -> None:
        self.cors = cors
        self.timer = metrics.RequestTimers()
        self.security = security
        self.tracer = tracer
        self.contract = contract
        self.router = router
        self.ui = ui
        self.max_body_bytes = max_body_bytes
        self.access_log = access_log
        self.route_for: Callable[[str | None], str | None] = contract.template_for
        self.documents = {
            "/openapi.yaml": (b"application/yaml", contract.raw),
            "/openapi.json": (b"application/json", contract.json),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.tracer is None:
            await self._handle(scope, receive, send, None)
            return
        span = _span(self.tracer, scope)
        token = tracing.attach(tracing.set_span_in_context(span))
        try:
            await self._handle(scope, receive, send, span)
        finally:
            tracing.detach(token)

    async def _handle(
        self, scope: Scope, receive: Receive, send: Send, span: tracing.Span | None
    ) -> None:
        started = time.perf_counter()
        request_id, declared, chunked, expect_continue, origin = _read_headers(scope["headers"])
        set_request_id(request_id)
        path: str = scope["path"]
        ui = path == "/ui" or path.startswith("/ui/")
        exchange = Exchange(request_id, send, ui=ui)
        if self.cors is not None:
            exchange.cors = self.cors.answer_headers(origin)
        metrics.IN_FLIGHT.inc()
        try:
            if declared is not None and not declared.isdigit():
                raise MalformedRequest("Content-Length must be a non-negative integer.")
            if is_probe(path, scope.get("raw_path")):
                self._attack(scope, path)
                raise RouteNotFound("No operation is served at this path.")
            if declared is not None and int(declared) > self.max_body_bytes:
                limit = self._limit(scope["method"], path)
                if int(declared) > limit:
                    await self._refuse_body(
                        exchange, receive, path, limit, drain=not expect_continue
                    )
                    return
            if declared is None and chunked:
                limit = self._limit(scope["method"], path)
                body = await self._read_chunked(receive, limit)
                if body is None:
                    await self._refuse_body(exchange, receive, path, limit, drain=True)
                    return
                receive = _replay(body, receive)
            await self._route(scope, receive, exchange, path)
        except CarebaseError as error:
            await self._fail(exchange, problem_of(error, path))
        except HTTPException:
            # Starlette's router: a path that matches, but not with this method.
            refusal = unrouted(self.contract, scope["method"], path)
            await self._fail(exchange, problem_of(refusal, path))
        except Exception as exc:
            tracing.current_span().record_exception(exc)  # no-op when not traced
            await self._fail(
                exchange, rendered_problem(problems.from_unexpected(exc, instance=path))
            )
        finally:
            route = self.route_for(exchange.operation_id)
            self.access_log.write(
                method=scope["method"],
                route=route,
                path=path,
                status=exchange.status,
                started=started,
                request_id=request_id,
                actor=current_actor(),
                span=span,
            )
            metrics.IN_FLIGHT.dec()
            self.timer(exchange.operation_id or exchange.label, scope["method"], exchange.status)(
                time.perf_counter() - started
            )
            if span is not None:
                _end_span(span, scope["method"], route, exchange.status, request_id)

    def _limit(self, method: str, path: str) -> int:
        """The body bound at this path: the operation's own when it declares a larger one."""
        return max(self.contract.body_limit(method, path) or 0, self.max_body_bytes)

    async def _route(self, scope: Scope, receive: Receive, exchange: Exchange, path: str) -> None:
        if self.cors is not None and scope["method"] == "OPTIONS":
            requested = _header(scope["headers"], b"access-control-request-method")
            if requested is not None:
                exchange.label = "cors_preflight"
                origin = _header(scope["headers"], b"origin")
                await exchange.respond(self.cors.preflight(origin, path, requested))
                return
        document = self.documents.get(path)
        if document is not None:
            if scope["method"] not in ("GET", "HEAD"):
                raise MethodNotAllowed(["GET", "HEAD"])
            media_type, body = document
            exchange.label = "openapi_document"
            headers = [(b"content-type", media_type), (b"content-length", b"%d" % len(body))]
            await exchange.respond(
                Rendered(200, headers, b"" if scope["method"] == "HEAD" else body)
            )
            return
        if exchange.ui:
            exchange.label = "swagger_ui"
            await self.ui(scope, receive, exchange.forward)
            return
        literal = self.contract.literal_methods(path)
        if literal is not None and scope["method"] not in literal:
            # Starlette would route it to a template that matches too (`…/{id}`).
            raise MethodNotAllowed(literal)
        scope["app"] = self  # Starlette raises its 405 instead of answering in plain text
        scope[EXCHANGE] = exchange
        scope.setdefault("extensions", {})
        await self.router(scope, receive, exchange.send)

    @staticmethod
    async def _fail(exchange: Exchange, rendered: Rendered) -> None:
        if exchange.started:
            return  # too late to answer; the client sees a cut response and the log has it
        await exchange.respond(rendered)

    def _attack(self, scope: Scope, path: str) -> None:
        client = scope.get("client") or ("", 0)
        agent = next((v for k, v in scope["headers"] if k == b"user-agent"), b"")
        raw = (scope.get("raw_path") or path.encode()).decode("latin-1")
        _security_log.warning(
            "security_event",
            kind="attack_path",
            path=raw[:512],
            ip=client[0],
            user_agent=agent.decode("latin-1")[:256],
        )
        if self.security is not None:  # once a minute per address: a scanner sends hundreds
            self.security.record(
                "attack_path",
                ip=client[0] or None,
                detail={"path": raw[:256]},
                once_per_s=60,
                once_key=(client[0],),
            )

    @staticmethod
    async def _refuse_body(
        exchange: Exchange, receive: Receive, path: str, limit: int, *, drain: bool
    ) -> None:
        """413, with the rest of the body drained so the client reads it (not a reset)."""
        rendered = problem_of(PayloadTooLarge(limit), path)
        if not drain:  # `Expect: 100-continue`: the client waits for us before sending it
            await exchange.respond(rendered)
            return
        await exchange.respond(rendered, more_body=True)
        try:
            async with asyncio.timeout(DRAIN_S):
                read = 0
                while read < DRAIN_BYTES:
                    message = await receive()
                    if message["type"] != "http.request":
                        break
                    read += len(message.get("body", b""))
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            pass
        await exchange.send({"type": "http.response.body", "body": b"", "more_body": False})

    @staticmethod
    async def _read_chunked(receive: Receive, limit: int) -> bytes | None:
        """A body without `Content-Length`, read within the limit; None when it is over."""
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)


def _read_headers(headers: Headers) -> tuple[str, bytes | None, bool, bool, bytes | None]:
    """The request id (given if sane, else new), `Content-Length`, chunked?, expects 100?,
    `Origin`: one pass over the headers."""
    request_id = declared = origin = None
    chunked = expect_continue = False
    for name, value in headers:
        if name == b"x-request-id":
            given = value.decode("latin-1")
            request_id = given if _SANE_REQUEST_ID.fullmatch(given) else None
        elif name == b"content-length":
            declared = value
        elif name == b"transfer-encoding":
            chunked = True
        elif name == b"expect":
            expect_continue = value.lower() == b"100-continue"
        elif name == b"origin":
            origin = value
    # 128 random bits in hex, as uuid4().hex wrote them, without building a UUID object.
    return request_id or os.urandom(16).hex(), declared, chunked, expect_continue, origin


def _header(headers: Headers, name: bytes) -> bytes | None:
    return next((value for key, value in headers if key == name), None)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
