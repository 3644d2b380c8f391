"""The floor for `make bench`: one Starlette route answering `/health/live`, nothing else.

Not part of the product. Carebase's `/health/live` is measured against it: the difference is
what Carebase's outer layer, routing and pipeline cost on a request that touches no store.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def live(_: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


app = Starlette(routes=[Route("/health/live", live)])
