"""Scaling out on the broker: worker processes started from the same command, each in a process
group of its own as on a host of its own, share the queue and the schedule."""

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import workers
from tests.conftest import Api, Mailbox
from tests.processes import start_procfile, stop

pytestmark = [
    pytest.mark.drill,
    pytest.mark.skipif(not workers.CROSS_PROCESS, reason="needs TEST_BROKER_URL"),
]
WORKERS = 3
BURST = 30
CLEANUP_INTERVAL = 3  # seconds; with ARQ it must divide a minute


class Process:
    """A Procfile process with its own log and its own heartbeat directory."""

    def __init__(self, name: str, directory: Path) -> None:
        self.name = name
        self.log = directory / f"{name}.log"
        self.heartbeats = directory / name
        self.env = os.environ | {
            "WORKER_HEARTBEAT_DIR": str(self.heartbeats),
            "CLEANUP_INTERVAL": str(CLEANUP_INTERVAL),
        }

    def start(self, process: str, cwd: Path) -> None:
        self.started_at = time.monotonic()
        with self.log.open("wb") as output:
            self.popen = start_procfile(process, self.env, cwd, output)

    def alive(self) -> bool:
        command = [sys.executable, "-m", "{{ cookiecutter.package_name }}.health", "worker"]
        result = subprocess.run(command, env=self.env, capture_output=True, check=False)
        return result.returncode == 0

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def processes(without_thread_worker: None, tmp_path: Path) -> Iterator[list[Process]]:
    """Worker processes from the Procfile's `worker` command, and what runs the schedule."""
    started = []
    try:
        for n in range(WORKERS):
            started.append(Process(f"worker-{n}", tmp_path))
            started[-1].start("worker", tmp_path)
        for name in workers.SCHEDULE_PROCESSES:
            started.append(Process(name, tmp_path))
            started[-1].start(name, tmp_path)
        deadline = time.monotonic() + 60
        for process in started[:WORKERS]:
            while not process.alive():
                assert process.popen.poll() is None, process.output()
                assert time.monotonic() < deadline, f"{process.name} never became ready"
                time.sleep(0.2)
        yield started
    finally:
        stop(*(process.popen for process in started))


def test_workers_share_a_burst_and_the_schedule(
    api: Api, mailbox: Mailbox, processes: list[Process]
) -> None:
    started = time.monotonic()
    addresses = [f"burst-{n}-{uuid.uuid4().hex[:8]}@example.com" for n in range(BURST)]
    signups = [api.post_json("/signups", {"email": a, "name": "Ada"}) for a in addresses]
    job_ids = [body["job_id"] for _, body in signups]
    outcomes = [api.wait_for_job(job_id, timeout=60) for job_id in job_ids]
    burst_seconds = time.monotonic() - started

    # Every email sent once, at the first attempt.
    assert [job["status"] for job in outcomes] == ["succeeded"] * BURST, outcomes
    assert [job["attempts"] for job in outcomes] == [1] * BURST
    assert [len(mailbox.to(address)) for address in addresses] == [1] * BURST

    # Each worker took a share, and no job went to two of them.
    logs = [process.output() for process in processes[:WORKERS]]
    shares = [sum(job_id in log for job_id in job_ids) for log in logs]
    assert all(shares), f"a worker took no job: {shares}"
    assert sum(shares) == BURST, shares

    # Meanwhile the schedule ticked: each tick's cleanup ran once, in one worker or another
    # (with ARQ every worker carries the schedule). A run is known by its task id, or else by
    # the tick it ended in.
    deadline = time.monotonic() + 30
    while len(runs := cleanup_runs(processes[:WORKERS])) < 3:
        assert time.monotonic() < deadline, f"the cleanup ran {len(runs)} times"
        time.sleep(0.5)
    assert len(set(runs)) == len(runs), f"a cleanup ran twice: {sorted(runs)}"
    ticks = (time.monotonic() - processes[0].started_at) / CLEANUP_INTERVAL
    assert len(runs) <= ticks + 1, f"{len(runs)} cleanups in {ticks:.1f} ticks"
    print(f"{BURST} emails in {burst_seconds:.1f}s, shared {shares}; {len(runs)} cleanups")


def cleanup_runs(processes: list[Process]) -> list[str]:
    runs = [run for process in processes for run in workers.cleanup_runs(process.output())]
    return [run_id or f"tick {int(ended) // CLEANUP_INTERVAL}" for ended, run_id in runs]
