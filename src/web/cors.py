"""Cross-origin access for the web app (CORS_ALLOWED_ORIGINS), answered at the edge.

- Only origins listed exactly are allowed, never `*`: the API takes credentials (a bearer
  token), and a wildcard would hand them to any site.
- A preflight (`OPTIONS` with `Access-Control-Request-Method`) from an allowed origin is
  answered 204 with the methods the path serves, the request headers the API reads, and a
  10-minute cache. From any other origin, or for a method the path does not serve, it is a
  403 problem without CORS headers, so the browser stops there.
- Every other answer to an allowed origin carries `Access-Control-Allow-Origin` (that origin),
  `Access-Control-Allow-Credentials`, and the response headers a client needs to read (ETag,
  Location, Retry-After, the rate-limit trio, X-Request-ID). Answers to a request with an
  `Origin` carry `Vary: Origin` whenever CORS is configured, so a cache never serves one
  origin's answer to another.
"""

from __future__ import annotations

from collections.abc import Iterable

from carebase.errors import Forbidden, RouteNotFound
from carebase.web.contract import Contract
from carebase.web.wire import Headers, Rendered

ALLOWED_HEADERS = b", ".join(
    (
        b"Authorization",
        b"Content-Type",
        b"Idempotency-Key",
        b"If-Match",
        b"If-None-Match",
        b"X-Request-ID",
        b"traceparent",
        b"tracestate",
    )
)
EXPOSED_HEADERS = b", ".join(
    (
        b"ETag",
        b"Location",
        b"Retry-After",
        b"RateLimit-Limit",
        b"RateLimit-Remaining",
        b"RateLimit-Reset",
        b"X-Request-ID",
        b"Content-Disposition",
    )
)
MAX_AGE_S = b"600"
VARY = (b"vary", b"Origin")


class Cors:
    def __init__(self, origins: Iterable[str], contract: Contract) -> None:
        self.origins = frozenset(origin.encode() for origin in origins)
        self.contract = contract

    def answer_headers(self, origin: bytes | None) -> Headers:
        """What an answer to a request with this `Origin` adds."""
        if origin is None:
            return []
        if origin not in self.origins:
            return [VARY]
        return [
            (b"access-control-allow-origin", origin),
            (b"access-control-allow-credentials", b"true"),
            (b"access-control-expose-headers", EXPOSED_HEADERS),
            VARY,
        ]

    def preflight(self, origin: bytes | None, path: str, requested: bytes) -> Rendered:
        """The answer to a preflight; raises the refusal as a problem."""
        if origin is None or origin not in self.origins:
            raise Forbidden("This origin may not call the API from a browser.")
        methods = self.contract.allowed_methods(path)
        if methods is None:
            raise RouteNotFound("No operation is served at this path.")
        method = requested.decode("latin-1").strip().upper()
        if method not in methods:
            raise Forbidden(f"{method or 'That method'} is not served at this path.")
        return Rendered(
            204,
            [
                (b"access-control-allow-methods", ", ".join(methods).encode()),
                (b"access-control-allow-headers", ALLOWED_HEADERS),
                (b"access-control-max-age", MAX_AGE_S),
                (b"cache-control", b"no-store"),
            ],
            b"",
        )
