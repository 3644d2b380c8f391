"""A webhook receiver for bench/webhooks.py: answers 204 at once and notes when each
`webhook-id` arrived. `GET /stats` gives the count, distinct ids and arrival times;
`POST /reset` forgets them. Usage: webhook_receiver.py PORT"""

from __future__ import annotations

import sys
import time
from typing import Any

import orjson
import uvicorn

arrivals: dict[str, float] = {}
received = [0]  # every POST, duplicates included


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    path, method = scope["path"], scope["method"]
    if method == "GET" and path == "/stats":
        body = orjson.dumps({"count": received[0], "distinct": len(arrivals), "arrivals": arrivals})
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})
        return
    if method == "POST" and path == "/reset":
        arrivals.clear()
        received[0] = 0
    elif method == "POST":
        now = time.time()
        received[0] += 1
        for name, value in scope["headers"]:
            if name == b"webhook-id":
                arrivals.setdefault(value.decode(), now)
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
    )
