"""A TCP proxy the test owns, to take the network away from a server that keeps running:
clients connect to the proxy (`in_front_of(url)` gives its `url`), `cut()` drops every open
connection and refuses new ones, `restore()` accepts connections again on the same port."""

import selectors
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Self
from urllib.parse import urlsplit

from tests.processes import free_port

DEFAULT_PORTS = {"redis": 6379, "amqp": 5672, "sqs": 443}


@contextmanager
def in_front_of(url: str) -> Iterator["Proxy"]:
    """A proxy to the server of a broker URL; proxy.url is that URL through the proxy."""
    address = urlsplit(url)
    port = address.port or DEFAULT_PORTS[address.scheme]
    with Proxy(address.hostname or "127.0.0.1", port) as proxy:
        proxy.url = address._replace(netloc=_netloc(address.netloc, proxy.port)).geturl()
        yield proxy


def _netloc(netloc: str, port: int) -> str:
    credentials, _, _ = netloc.rpartition("@")
    return f"{credentials}@127.0.0.1:{port}" if credentials else f"127.0.0.1:{port}"


class Proxy:
    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = free_port()
        self.url = ""
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        self.restore()
        return self

    def __exit__(self, *_: object) -> None:
        self.cut()

    def restore(self) -> None:
        """Listen again on the same port."""
        listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        listener.settimeout(0.1)
        self._listener = listener
        self._thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._thread.start()

    def cut(self) -> None:
        """Stop listening (new connections are refused) and drop every open connection."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            _close(sock)

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed by cut()
            try:
                upstream = socket.create_connection(self.target, timeout=3)
            except OSError:
                _close(client)
                continue
            with self._lock:
                if self._listener is not listener:  # cut meanwhile
                    _close(client)
                    _close(upstream)
                    return
                self._sockets |= {client, upstream}
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()

    def _pipe(self, client: socket.socket, upstream: socket.socket) -> None:
        """Copy bytes both ways until either side closes (or cut() closes both)."""
        peers = {client: upstream, upstream: client}
        with selectors.DefaultSelector() as selector:
            for sock in peers:
                sock.setblocking(True)
                selector.register(sock, selectors.EVENT_READ)
            try:
                while client.fileno() >= 0 and upstream.fileno() >= 0:
                    for key, _ in selector.select(timeout=0.5):
                        source: socket.socket = key.fileobj  # type: ignore[assignment]
                        data = source.recv(65536)
                        if not data:
                            return
                        peers[source].sendall(data)
            except (OSError, ValueError):
                return  # a socket was closed under us
            finally:
                with self._lock:
                    self._sockets -= {client, upstream}
                _close(client)
                _close(upstream)


def _close(sock: socket.socket) -> None:
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
