"""The composition root: `create_app(settings)` wires the contract, the layers and the services."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import connexion
from connexion.datastructures import MediaTypeDict
from connexion.exceptions import ProblemException
from connexion.lifecycle import ConnexionRequest, ConnexionResponse
from connexion.middleware import ConnexionMiddleware, MiddlewarePosition
from connexion.middleware.security import SecurityMiddleware
from connexion.options import SwaggerUIOptions
from connexion.resolver import Resolver
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from carebase import errors
from carebase.apps import common
from carebase.config import Settings
from carebase.handlers.core.audit import AuditHandlers
from carebase.handlers.core.auth import AuthHandlers
from carebase.handlers.core.custom_fields import CustomFieldHandlers
from carebase.handlers.core.organizations import OrganizationHandlers
from carebase.handlers.core.patients import PatientHandlers
from carebase.handlers.core.specialists import SpecialistHandlers
from carebase.handlers.core.system import SystemHandlers
from carebase.integrations.mail import OutboxRelay
from carebase.logging import configure_logging
from carebase.operations import migrations
from carebase.operations.housekeeping import housekeeping
from carebase.security.auth import Authenticate, Authenticator, Authorize
from carebase.security.lockout import Lockout
from carebase.security.passwords import HashCost, Passwords
from carebase.security.ratelimit import RateLimit, RateLimiter, Rule, rules_from_contract
from carebase.services.audit import AuditService
from carebase.services.custom_fields import CustomFieldService
from carebase.services.identity import IdentityService, Links
from carebase.services.organizations import OrganizationService
from carebase.services.patients import PatientService
from carebase.services.specialists import SpecialistService
from carebase.services.system import HealthService
from carebase.web import middleware, problems
from carebase.web.contract import Contract
from carebase.web.idempotency import Idempotency
from carebase.web.responses import problem_response
from carebase.web.validation import BodyValidator, ParameterValidator


def operation_id(method_name: str) -> str:
    """`get_readiness` → `getReadiness`: the spec's operationId names the handler method."""
    head, *rest = method_name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def handler_registry(handlers: list[object]) -> dict[str, Callable[..., Any]]:
    registry: dict[str, Callable[..., Any]] = {}
    for handler in handlers:
        for name, method in inspect.getmembers(handler, inspect.iscoroutinefunction):
            if name.startswith("_"):
                continue
            key = operation_id(name)
            if key in registry:
                raise RuntimeError(f"two handlers for operationId {key}")
            registry[key] = method
    return registry


class CarebaseApp:
    """The ASGI application: Carebase's layers around Connexion."""

    def __init__(
        self,
        asgi: ASGIApp,
        *,
        contract: Contract,
        dependencies: common.Dependencies,
        relay: OutboxRelay,
        authenticator: Authenticator,
    ) -> None:
        self._asgi = asgi
        self.contract = contract
        self.dependencies = dependencies
        self.relay = relay
        self.authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._asgi(scope, receive, send)


def create_app(settings: Settings, *, overrides: Mapping[str, Any] | None = None) -> CarebaseApp:
    """Build the core service.

    `overrides` replaces parts for tests: `database`, `redis`, `tokens`, `mail` (Dependencies),
    `contract` (another bundled spec) and `extra_handlers` (handler objects for its operations).
    """
    configure_logging(level=settings.log_level, json_output=settings.log_format == "json")
    given = dict(overrides or {})
    contract: Contract = given.pop("contract", None) or Contract.for_service("core")
    extra_handlers: list[object] = given.pop("extra_handlers", [])
    dependencies = common.dependencies(settings, given)
    health = HealthService(
        db=dependencies.database,
        redis=dependencies.redis,
        expected_migrations=migrations.expected_versions(settings.migrations_dir),
    )
    links = Links(settings.app_base_url)
    authenticator = Authenticator(
        tokens=dependencies.tokens, db=dependencies.database, cache_s=settings.auth_cache_s
    )
    identity = IdentityService(
        db=dependencies.database,
        tokens=dependencies.tokens,
        passwords=Passwords(
            HashCost(
                time_cost=settings.password_hash_time_cost,
                memory_kib=settings.password_hash_memory_kib,
            )
        ),
        lockout=Lockout(
            dependencies.redis,
            max_failures=settings.login_max_failures,
            base_lock_s=settings.login_lockout_s,
        ),
        links=links,
        refresh_ttl_s=settings.refresh_token_ttl_s,
    )
    organizations = OrganizationService(
        db=dependencies.database, links=links, on_access_changed=authenticator.forget
    )
    relay = OutboxRelay(dependencies.database, dependencies.mail)
    sealer = dependencies.sealer
    patients = PatientService(
        db=dependencies.database,
        sealer=sealer,
        tokens=dependencies.tokens,
        links=links,
        impersonation_ttl_s=settings.impersonation_ttl_s,
    )
    registry = handler_registry(
        [
            AuditHandlers(audit=AuditService(db=dependencies.database)),
            AuthHandlers(tokens=dependencies.tokens, identity=identity),
            CustomFieldHandlers(custom_fields=CustomFieldService(db=dependencies.database)),
            OrganizationHandlers(organizations=organizations),
            PatientHandlers(patients=patients),
            SpecialistHandlers(
                specialists=SpecialistService(db=dependencies.database, sealer=sealer)
            ),
            SystemHandlers(health=health),
            *extra_handlers,
        ]
    )

    @asynccontextmanager
    async def lifespan(_: object) -> AsyncIterator[None]:
        await dependencies.database.open(wait=False)
        tasks = [
            asyncio.create_task(relay.run(), name="mail-relay"),
            asyncio.create_task(housekeeping(dependencies.database), name="housekeeping"),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await dependencies.database.close()
            await dependencies.redis.aclose()

    app = connexion.AsyncApp(
        "carebase",
        specification_dir=str(contract.path.parent),
        lifespan=lifespan,
        strict_validation=True,
        validate_responses=settings.validate_responses,
        pythonic_params=True,
        # Carebase authenticates in its own layer (auth.Authenticate), which reads roles from
        # the database; Connexion's would demand an x-*InfoFunc per scheme and run twice.
        middlewares=[
            m for m in ConnexionMiddleware.default_middlewares if m is not SecurityMiddleware
        ],
        validator_map={
            "body": MediaTypeDict({"*/*json": BodyValidator}),
            "parameter": ParameterValidator,
        },
        # Swagger UI reads the committed bundle from /openapi.json, served below.
        swagger_ui_options=SwaggerUIOptions(
            serve_spec=False, spec_path="/openapi.json", swagger_ui_path="/ui"
        ),
    )
    app.add_api(
        contract.path.name,
        resolver=Resolver(function_resolver=lambda op_id: _resolve(registry, op_id)),
    )
    # Connexion inserts each before its validation, in this order: authentication → rate
    # limit (which keys by the principal) → authorization, as DESIGN.md orders them.
    app.add_middleware(
        Authenticate,
        position=MiddlewarePosition.BEFORE_VALIDATION,
        authenticator=authenticator,
        operations=contract.operations,
    )
    app.add_middleware(
        RateLimit,
        position=MiddlewarePosition.BEFORE_VALIDATION,
        limiter=RateLimiter(dependencies.redis),
        rules=rules_from_contract(contract.operations),
        default=Rule(
            limit=settings.rate_limit_default_limit,
            window_s=settings.rate_limit_default_window_s,
            key="user",
        ),
    )
    app.add_middleware(
        Authorize, position=MiddlewarePosition.BEFORE_VALIDATION, operations=contract.operations
    )
    # After validation: a request the contract refuses never reserves a key.
    app.add_middleware(
        Idempotency,
        position=MiddlewarePosition.BEFORE_CONTEXT,
        db=dependencies.database,
        sealer=sealer,
        operations=contract.operations,
        ttl_s=settings.idempotency_ttl_s,
    )
    _install_error_handlers(app, contract)

    asgi = middleware.stack(
        SpecDocument(app, contract),
        [
            middleware.RequestId,
            middleware.ProblemRecovery,
            middleware.SecurityHeaders,
            lambda inner: middleware.AccessLog(inner, route_for=contract.template_for),
            middleware.AttackBlocker,
            lambda inner: middleware.BodyLimit(inner, max_bytes=settings.max_body_bytes),
        ],
    )
    return CarebaseApp(
        asgi,
        contract=contract,
        dependencies=dependencies,
        relay=relay,
        authenticator=authenticator,
    )


def _resolve(registry: Mapping[str, Callable[..., Any]], op_id: str) -> Callable[..., Any]:
    try:
        return registry[op_id]
    except KeyError:
        raise RuntimeError(f"no handler method for operationId {op_id}") from None


class SpecDocument(middleware.HttpLayer):
    """`GET /openapi.yaml` is the committed bundle byte for byte; `/openapi.json` the same as JSON.

    Connexion's own copies are fully dereferenced, which leaves TypeScript generators no
    named schemas (GROUND.md), so they are switched off and these answer instead.
    """

    def __init__(self, app: ASGIApp, contract: Contract) -> None:
        super().__init__(app)
        self.contract = contract
        self.documents = {
            "/openapi.yaml": (b"application/yaml", contract.raw),
            "/openapi.json": (b"application/json", contract.json),
        }

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        document = self.documents.get(scope["path"])
        if document is None:
            literal = self.contract.literal_methods(scope["path"])
            if literal is not None and scope["method"] not in literal:
                # Starlette would route it to a template that matches too (`…/{id}`).
                error = errors.MethodNotAllowed(literal)
                await middleware.send_problem(
                    send, problems.from_error(error, instance=scope["path"])
                )
                return
            await self.app(scope, receive, send)
            return
        if scope["method"] not in ("GET", "HEAD"):
            error = errors.MethodNotAllowed(["GET", "HEAD"])
            await middleware.send_problem(send, problems.from_error(error, instance=scope["path"]))
            return
        media_type, body = document
        headers = [(b"content-type", media_type), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )


_STATUS_ERRORS: Mapping[int, type[errors.CarebaseError]] = {
    400: errors.MalformedRequest,
    401: errors.Unauthenticated,
    403: errors.Forbidden,
    404: errors.RouteNotFound,
    409: errors.Conflict,
    415: errors.UnsupportedMediaType,
}


def _install_error_handlers(app: connexion.AsyncApp, contract: Contract) -> None:
    """Every exception, whatever raised it, leaves as a problem rendered by `problems`."""

    def carebase_error(request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
        if not isinstance(exc, errors.CarebaseError):
            return unexpected(request, exc)
        return problem_response(problems.from_error(exc, instance=request.url.path))

    def http_error(request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
        if not isinstance(exc, HTTPException):
            return unexpected(request, exc)
        path = request.url.path
        status = getattr(exc, "status", None) or exc.status_code
        if status == 404 and contract.allowed_methods(path) is None:
            return carebase_error(
                request, errors.RouteNotFound("No operation is served at this path.")
            )
        if status in (404, 405):
            # Connexion's own Allow header lists the wrong methods; the contract knows.
            allowed = contract.allowed_methods(path) or ()
            if request.method in allowed:
                # The method is served here, but a path parameter the router refuses (a
                # control character, say) left the request unrouted: nothing by that id.
                return carebase_error(request, errors.NotFound("No such resource."))
            return carebase_error(request, errors.MethodNotAllowed(allowed))
        error_class = _STATUS_ERRORS.get(status)
        if error_class is None:
            return problem_response(problems.from_unexpected(exc, instance=path))
        detail = getattr(exc, "detail", None)
        return carebase_error(request, error_class(detail if isinstance(detail, str) else None))

    def unexpected(request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
        return problem_response(problems.from_unexpected(exc, instance=request.url.path))

    app.add_error_handler(errors.CarebaseError, carebase_error)
    app.add_error_handler(ProblemException, http_error)
    app.add_error_handler(HTTPException, http_error)
    app.add_error_handler(Exception, unexpected)
