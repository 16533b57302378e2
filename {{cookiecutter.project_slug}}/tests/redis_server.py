"""A Redis server of the test's own, without persistence, as many small plans run it: the drills
stop it, restart it empty, and start the Procfile's processes against it."""

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tests.processes import free_port


class RedisServer:
    def __init__(self) -> None:
        server = shutil.which("redis-server")
        assert server, "this drill needs redis-server on PATH"
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.command = [server, "--bind", "127.0.0.1", "--port", str(self.port)]
        self.command += ["--save", "", "--appendonly", "no"]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        process = self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not self.answers():
            assert process.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def answers(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
            self.process = None

    def restart_empty(self) -> None:
        self.stop()
        self.start()


@contextmanager
def running() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
