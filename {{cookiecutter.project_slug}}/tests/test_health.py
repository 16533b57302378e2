"""The worker health check that Docker and Kubernetes run: it answers for a live worker only."""

import os
import subprocess
import sys
import time

import pytest

from {{ cookiecutter.package_name }}.health import PROCESSES, Heartbeat, main

from tests import workers


def check(process: str) -> subprocess.CompletedProcess[str]:
    """The health check, run as an orchestrator runs it."""
    command = [sys.executable, "-m", "{{ cookiecutter.package_name }}.health", process]
    return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)


def wait_until_alive(process: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not Heartbeat(process).check()[0]:
        assert time.monotonic() < deadline, Heartbeat(process).check()[1]
        time.sleep(0.1)


@pytest.mark.parametrize("process", PROCESSES)
def test_health_check_answers_for_a_live_worker(worker: workers.ThreadWorker, process: str) -> None:
    wait_until_alive(process)
    result = check(process)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{process}: alive")


def test_health_check_fails_once_the_worker_is_gone(worker: workers.ThreadWorker) -> None:
    wait_until_alive("worker")
    worker.stop()
    try:
        result = check("worker")  # stopped: its heartbeat file is gone
        assert result.returncode == 1
        assert "none runs here" in result.stderr

        # Killed without a chance to clean up: its last heartbeat grows old.
        heartbeat = Heartbeat("worker")
        heartbeat.beat()
        assert heartbeat.check()[0]
        long_ago = time.time() - 60
        os.utime(heartbeat.path, (long_ago, long_ago))
        alive, message = heartbeat.check()
        assert not alive
        assert "last heartbeat 60s ago" in message
    finally:
        Heartbeat("worker").stop()
        worker.start()
    wait_until_alive("worker")


def test_health_check_refuses_an_unknown_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["web"]) == 2
    assert "usage" in capsys.readouterr().err
