"""An end time for a whole exchange with another server, however slowly it answers.

Socket timeouts bound each read: a server that sends a byte before each one runs out keeps a call
going for ever, and a worker thread with it (a queue's job timeout cannot stop a thread). A
`Deadline` shuts the exchange's socket down when its time is up, from the process's timer thread:
a read or write blocked on it returns at once, the client library fails with its own error, and
`expired` tells that failure from the others. Nothing has to check the time between reads.
"""

import contextlib
import heapq
import itertools
import os
import socket
import threading
import time
from types import TracebackType


class Deadline:
    """Within `with Deadline(seconds) as deadline:`, the sockets given to `watch` are shut down
    once `seconds` have passed."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self.done = False
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()

    def watch(self, sock: socket.socket) -> None:
        """Shut `sock` (the exchange's socket from now on) down at the end, or now if it is past."""
        with self._lock:
            self._socket = sock
            expired = self.expired
        if expired:
            _shut(sock)

    def __enter__(self) -> "Deadline":
        _timer.add(time.monotonic() + self.seconds, self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with self._lock:
            self.done = True  # the timer forgets it when its time comes
            self._socket = None

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            sock = self._socket
        if sock is not None:
            _shut(sock)


class _Timer:
    """One thread per process expires every deadline that is due: no thread per exchange."""

    def __init__(self) -> None:
        self._due: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()  # ties never compare two deadlines
        self._wake = threading.Condition()
        self._pid = 0

    def add(self, when: float, deadline: Deadline) -> None:
        with self._wake:
            if self._pid != os.getpid():  # the first deadline here, or in a forked child
                self._pid, self._due = os.getpid(), []
                threading.Thread(target=self._run, name="deadlines", daemon=True).start()
            heapq.heappush(self._due, (when, next(self._order), deadline))
            if self._due[0][2] is deadline:  # sooner than the one the thread waits for
                self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while self._due and self._due[0][2].done:
                    heapq.heappop(self._due)  # ended in time
                wait = self._due[0][0] - time.monotonic() if self._due else None
                if wait is None or wait > 0:
                    self._wake.wait(wait)
                    continue
                deadline = heapq.heappop(self._due)[2]
            deadline.expire()


_timer = _Timer()


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # closed already: nothing is blocked on it
        sock.shutdown(socket.SHUT_RDWR)
