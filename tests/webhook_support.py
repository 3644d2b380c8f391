"""Webhook test parts: name resolvers the SSRF guard asks (no real DNS in tests), and a
receiver on 127.0.0.1 that records what it is sent and answers as told.

Two resolvers, on purpose: the API's (`REGISTRATION_DNS`) answers public addresses for the
example names, so endpoints can be registered; the test sender's (`DELIVERY_DNS`) knows only
the loopback receiver and what a test puts in it, so no test ever connects beyond loopback.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RECEIVER_HOST = "receiver.carebase.test"
PUBLIC_ADDRESS = "93.184.215.14"  # never connected to: only the API's resolver answers it


class TestDns:
    __test__ = False

    def __init__(self, answers: dict[str, list[str]], *, public_suffixes: tuple[str, ...] = ()):
        self._answers = dict(answers)
        self._public_suffixes = public_suffixes

    async def resolve(self, host: str, port: int) -> list[str]:
        host = host.lower()
        if host in self._answers:
            return list(self._answers[host])
        if host.endswith(self._public_suffixes):
            return [PUBLIC_ADDRESS]
        raise socket.gaierror(socket.EAI_NONAME, "unknown test name")

    @contextlib.contextmanager
    def answering(self, host: str, addresses: list[str]) -> Iterator[None]:
        before = self._answers.get(host)
        self._answers[host] = addresses
        try:
            yield
        finally:
            if before is None:
                self._answers.pop(host, None)
            else:
                self._answers[host] = before


REGISTRATION_DNS = TestDns(
    {RECEIVER_HOST: ["127.0.0.1"]},
    public_suffixes=(".example.com", ".example.org", ".carebase.test"),
)
DELIVERY_DNS = TestDns({RECEIVER_HOST: ["127.0.0.1"]})


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"


class Receiver:
    """Records each request; answers from `script` in turn, then `otherwise`. `hold` (an
    Event) keeps a request waiting before it is answered (a receiver in the middle of it)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.script: list[Answer] = []
        self.otherwise = Answer()
        self.hold: threading.Event | None = None
        self.arrived = threading.Event()
        self.bytes_read = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.bytes_read += length
                    receiver.received.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    answer = receiver.script.pop(0) if receiver.script else receiver.otherwise
                receiver.arrived.set()
                if receiver.hold is not None:
                    receiver.hold.wait(timeout=30)
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            def log_message(self, *args: object) -> None:  # type: ignore[override]
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str = "/hook", host: str = RECEIVER_HOST) -> str:
        return f"http://{host}:{self.port}{path}"

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self.hold is not None:
            self.hold.set()
        self._server.shutdown()
        self._server.server_close()

    def ids(self) -> list[str]:
        return [r.headers["webhook-id"] for r in self.received]


@contextlib.contextmanager
def running_receiver(setup: Callable[[Receiver], None] | None = None) -> Iterator[Receiver]:
    receiver = Receiver()
    if setup is not None:
        setup(receiver)
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()
