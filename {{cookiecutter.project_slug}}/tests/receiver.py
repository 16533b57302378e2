"""A webhook receiver of the test's own: it verifies each delivery's signature and answers as
it is told (at once, with a status and headers, never, or a byte at a time)."""

import base64
import queue
import select
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from {{ cookiecutter.package_name }}.settings import Settings, get_settings

SECRET = "whsec_" + base64.b64encode(b"a test secret of 32 bytes, fixed").decode()


@dataclass
class Delivery:
    headers: dict[str, str]
    event: Any  # the verified JSON body; None if the signature did not verify
    arrived: float


class Receiver:
    """An HTTP endpoint for webhooks that verifies each one and answers as it is told."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        # How long each dripped answer went on, put there once the hang-up is seen.
        self.dripped: queue.Queue[float] = queue.Queue()
        self.answers: list[tuple[int, dict[str, str], bytes]] = []
        self.hung = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.take(dict(self.headers), body)
                status, headers, content = receiver.next_answer()
                if status == -1:
                    receiver.drip(self.connection, content)
                    return
                if status == 0:
                    receiver.hung.set()
                    receiver.release.wait(10)
                    return
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/signups"

    def take(self, headers: dict[str, str], body: bytes) -> None:
        try:
            event = Webhook(SECRET).verify(body, headers)
        except WebhookVerificationError:
            event = None
        with self._lock:
            self.deliveries.append(Delivery(headers, event, time.monotonic()))

    def drip(self, connection: socket.socket, start: bytes) -> None:
        self.dripped.put(drip(connection, start, self.release))

    def next_answer(self) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            return self.answers.pop(0) if self.answers else (204, {}, b"")

    def of(self, job_id: str) -> list[Delivery]:
        with self._lock:
            return [d for d in self.deliveries if d.headers.get("webhook-id") == job_id]

    def __enter__(self) -> "Receiver":
        serve = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        serve.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def drip(connection: socket.socket, start: bytes, stop: threading.Event) -> float:
    """Send `start`, then a byte every half second until the peer hangs up or `stop` is set; how
    long that went on."""
    began = time.monotonic()
    connection.sendall(start)
    while not stop.is_set():
        readable, _, _ = select.select([connection], [], [], 0.5)
        if readable and not connection.recv(1024):
            break  # the peer hung up
        try:
            connection.sendall(b"a")
        except OSError:
            break
    return time.monotonic() - began


def configure(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    """Set settings in the environment (for worker processes too) and reload them."""
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    reload_settings()


def reload_settings() -> None:
    """Read the settings from the environment again. A thread of this process (the worker's)
    that read them before a change may store them after the cache is cleared: clear it until
    what it holds is what the environment says."""
    get_settings.cache_clear()
    while get_settings() != Settings():
        get_settings.cache_clear()
