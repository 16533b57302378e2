"""Is a worker of a given kind alive here? The check that Docker and Kubernetes run per worker.

    python -m {{ cookiecutter.package_name }}.health worker        # or: file_worker

It exits 0 when a worker of that kind, on this host or in this container, took part in its
queue within the last three `WORKER_HEARTBEAT_INTERVAL`s, and 1 otherwise; either way it prints
one line saying why. Each worker touches a heartbeat file for its kind at that interval from the
loop that takes its jobs, and only while it is connected to the broker; it removes the file when
it stops. A file answers for every broker alike (SQS has no remote control to ping a worker
through), costs neither the broker nor the probe a round trip, and speaks for the worker next to
it, whereas ARQ's health key in Redis speaks for whichever worker of the queue wrote it last.
"""

import sys
import time

from .settings import get_settings

PROCESSES = ("worker", "file_worker")
# A worker that has missed this many heartbeats is stuck, or cut off from the broker.
MISSED_BEATS = 3


class Heartbeat:
    """The heartbeat file of one kind of worker process."""

    def __init__(self, process: str) -> None:
        if process not in PROCESSES:
            raise ValueError(f"unknown process {process!r}: expected one of {', '.join(PROCESSES)}")
        self.process = process
        self.path = get_settings().worker_heartbeat_dir / f"{__package__}.{process}.heartbeat"

    def beat(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()

    def stop(self) -> None:
        self.path.unlink(missing_ok=True)

    def check(self) -> tuple[bool, str]:
        """Whether a worker of this kind is alive, and a line that says so or why not."""
        interval = get_settings().worker_heartbeat_interval
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return False, f"{self.process}: no heartbeat in {self.path}: none runs here"
        if age > MISSED_BEATS * interval:
            return False, (
                f"{self.process}: last heartbeat {age:.0f}s ago (expected every {interval:g}s):"
                " stuck, stopped, or cut off from the broker"
            )
        return True, f"{self.process}: alive, last heartbeat {age:.1f}s ago"


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in PROCESSES:
        print(f"usage: python -m {__package__}.health {' | '.join(PROCESSES)}", file=sys.stderr)
        return 2
    alive, message = Heartbeat(argv[0]).check()
    print(message, file=sys.stdout if alive else sys.stderr)
    return 0 if alive else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
