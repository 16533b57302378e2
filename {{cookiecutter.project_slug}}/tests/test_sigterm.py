"""SIGTERM stops every worker process within its grace period, whatever its broker is doing."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from {{ cookiecutter.package_name }}.health import PROCESSES as HEARTBEAT_PROCESSES
from {{ cookiecutter.package_name }}.health import Heartbeat

from tests import workers
from tests.processes import ProcessGroup, wait_until
from tests.proxy import in_front_of

pytestmark = [
    pytest.mark.drill,
    pytest.mark.skipif(not workers.CROSS_PROCESS, reason="needs TEST_BROKER_URL"),
]
# Far below the grace period a deploy gives (30 s; ARQ's SHUTDOWN_WAIT, 25 s), with no job running.
GRACE_SECONDS = 10


def stop_all(processes: dict[str, subprocess.Popen[bytes]]) -> dict[str, float]:
    """SIGTERM each process, as Docker and Kubernetes send it; how long each took to exit."""
    sent = time.monotonic()
    for process in processes.values():
        os.kill(process.pid, signal.SIGTERM)
    took = {}
    for name, process in processes.items():
        try:
            process.wait(timeout=GRACE_SECONDS - (time.monotonic() - sent))
        except subprocess.TimeoutExpired:
            pytest.fail(f"{name} did not stop within {GRACE_SECONDS}s of SIGTERM")
        took[name] = time.monotonic() - sent
    return took


def test_sigterm_stops_workers_cut_off_from_the_broker_or_never_connected(
    migrated_database: None, without_thread_worker: None, tmp_path: Path
) -> None:
    assert workers.TEST_BROKER_URL
    (tmp_path / "cut_off").mkdir()
    (tmp_path / "never").mkdir()
    never = {"BROKER_URL": workers.UNREACHABLE_BROKER_URL}
    with (
        in_front_of(workers.TEST_BROKER_URL) as broker_proxy,
        ProcessGroup(
            workers.WORKER_PROCESSES, {"BROKER_URL": broker_proxy.url}, tmp_path / "cut_off"
        ) as reconnecting,
        ProcessGroup(workers.WORKER_PROCESSES, never, tmp_path / "never") as unreached,
    ):
        heartbeats = [Heartbeat(p) for p in workers.WORKER_PROCESSES if p in HEARTBEAT_PROCESSES]
        wait_until(lambda: all(h.check()[0] for h in heartbeats), "no worker connected", 60)
        time.sleep(2)  # the scheduler, which has no heartbeat, connects meanwhile
        broker_proxy.cut()
        time.sleep(5)  # well into reconnecting
        assert reconnecting.running()
        assert unreached.running()
        took = {
            **{f"{name} (reconnecting)": t for name, t in stop_all(reconnecting.processes).items()},
            **{f"{name} (never connected)": t for name, t in stop_all(unreached.processes).items()},
        }
    print("stopped after SIGTERM: " + ", ".join(f"{n} {t:.1f}s" for n, t in took.items()))
