"""Connexion routes; the compiled plans answer.

Connexion loads the bundle and its `RoutingMiddleware` matches a request to an operation,
setting the operationId on the scope (`scope["extensions"]["connexion_routing"]`). Behind it,
`Dispatcher` runs that operation's compiled plan. Nothing else of Connexion's request
machinery (security, validation, parameter decorators, request/response objects, context)
is on the path. Swagger UI is Connexion's too, served under `/ui` only.

Starlette's router, which Connexion uses, tries every route's regex in order; the routes are
indexed here by their first two literal path segments, so a request is matched against the
few routes that share its prefix, in their original order.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Mapping

from connexion.middleware.abstract import ROUTING_CONTEXT
from connexion.middleware.routing import RoutingMiddleware
from connexion.middleware.swagger_ui import SwaggerUIMiddleware
from connexion.options import SwaggerUIOptions
from connexion.resolver import Resolver
from connexion.spec import Specification
from starlette.routing import BaseRoute, Match, Mount, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from carebase.errors import CarebaseError, MethodNotAllowed, NotFound, RouteNotFound
from carebase.web.contract import Contract
from carebase.web.pipeline import Plan

EXCHANGE = "carebase.exchange"
"""The scope key of the outer layer's per-request record (`edge.Exchange`)."""


def unrouted(contract: Contract, method: str, path: str) -> CarebaseError:
    """Why a request reached no operation, from the contract (Starlette's own `Allow` header
    lists the wrong methods)."""
    allowed = contract.allowed_methods(path)
    if allowed is None:
        return RouteNotFound("No operation is served at this path.")
    if method in allowed:
        # The method is served here, but a path parameter the router refuses (a control
        # character, say) left the request unrouted: nothing by that id.
        return NotFound("No such resource.")
    return MethodNotAllowed(allowed)


async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
    raise RouteNotFound("No operation is served at this path.")


class Dispatcher:
    """The app behind Connexion's routing: the routed operation's plan, or why there is none."""

    def __init__(self, contract: Contract, plans: Mapping[str, Plan]) -> None:
        self.contract = contract
        self.plans = plans

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        operation_id = scope["extensions"][ROUTING_CONTEXT].get("operation_id")
        plan = self.plans.get(operation_id) if operation_id else None
        if plan is None:
            raise unrouted(self.contract, scope["method"], scope["path"])
        exchange = scope[EXCHANGE]
        exchange.operation_id = operation_id
        await exchange.respond(await plan.run(scope, receive, exchange.request_id))


class _IndexedRouter(Router):
    """A Starlette router that tries only the routes sharing the path's first two segments."""

    def __init__(self, routes: list[BaseRoute], default: ASGIApp) -> None:
        super().__init__(routes=routes, default=default, redirect_slashes=False)
        buckets: dict[str, list[int]] = defaultdict(list)
        anywhere: list[int] = []
        for index, route in enumerate(routes):
            key = _key(getattr(route, "path", "{"))
            (anywhere if "{" in key else buckets[key]).append(index)
        self._index = {
            key: [routes[i] for i in sorted(members + anywhere)] for key, members in buckets.items()
        }
        self._anywhere = [routes[i] for i in anywhere]

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().app(scope, receive, send)
            return
        if "router" not in scope:
            scope["router"] = self
        partial = partial_scope = None
        for route in self._index.get(_key(_route_path(scope)), self._anywhere):
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                scope["route"] = route
                scope.update(child_scope)
                await route.handle(scope, receive, send)
                return
            if match is Match.PARTIAL and partial is None:
                partial, partial_scope = route, child_scope
        if partial is not None and partial_scope is not None:
            scope["route"] = partial
            scope.update(partial_scope)
            await partial.handle(scope, receive, send)  # raises 405 (the edge puts "app" in scope)
            return
        await self.default(scope, receive, send)


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _key(path: str) -> str:
    return "/".join(path.strip("/").split("/")[:2])


def routing(contract: Contract, specification: Specification, dispatcher: Dispatcher) -> ASGIApp:
    """Connexion's routing middleware over the bundle, its route list indexed."""
    middleware = RoutingMiddleware(dispatcher)
    middleware.add_api(
        specification,
        # Connexion resolves every operationId while it builds its routes; the plans answer.
        resolver=Resolver(function_resolver=lambda op_id: dispatcher.plans[op_id].handler),
    )
    for mount in middleware.router.routes:
        if isinstance(mount, Mount) and isinstance(mount.app, Router):
            inner = mount.app
            indexed = _IndexedRouter(list(inner.routes), inner.default)
            mount._base_app = indexed
            mount.app = indexed
    middleware.router.redirect_slashes = False
    app: ASGIApp = middleware
    return app


def swagger_ui(specification: Specification) -> ASGIApp:
    """Connexion's Swagger UI at `/ui/`, reading the committed bundle from `/openapi.json`."""
    middleware = SwaggerUIMiddleware(not_found)
    middleware.add_api(
        specification,
        swagger_ui_options=SwaggerUIOptions(
            serve_spec=False, spec_path="/openapi.json", swagger_ui_path="/ui"
        ),
    )
    app: ASGIApp = middleware
    return app


def load(contract: Contract) -> Specification:
    """Connexion's view of the bundle, from the document the contract already parsed (its own
    loader would parse the file again with the pure-Python YAML loader, ~2.6 s, and render it
    as a Jinja template first, which a contract never is)."""
    return Specification.from_dict(
        copy.deepcopy(contract.document), base_uri=f"{contract.path.parent}/"
    )
