"""`honcho start` with no process names, as a newcomer first types it: the whole Procfile runs,
and keeps running once the release step has migrated the database{% if cookiecutter.task_queue == "celery" and cookiecutter.broker != "sqs" %} and while Flower has no
credentials{% endif %}."""

import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import workers
from tests.conftest import PROJECT_ROOT, SMTP_PORT, TEST_ENV
from tests.processes import PROCFILE, free_port

pytestmark = [
    pytest.mark.drill,  # seven processes started at once: verified once per broker
    pytest.mark.skipif(not workers.CROSS_PROCESS, reason="needs TEST_BROKER_URL"),
]
# What a process with nothing more to do says under honcho (idle.py) before it waits.
IDLE = "idle until honcho stops"
STARTED = re.compile(r"^\S+ system\s+\| (\w+)\.1 started \(pid=(\d+)\)$", re.MULTILINE)
STOPPED = re.compile(r"^\S+ system\s+\| (\w+)\.1 stopped \(rc=(-?\d+)\)$", re.MULTILINE)


@dataclass
class Honcho:
    process: subprocess.Popen[bytes]
    log: Path
    port: int
    env: dict[str, str]

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            stopped = STOPPED.findall(self.output())
            assert not stopped, f"stopped {stopped} before {what}:\n{self.output()[-6000:]}"
            assert time.monotonic() < deadline, f"no {what}:\n{self.output()[-6000:]}"
            time.sleep(0.2)

    def said(self, name: str, text: str) -> bool:
        return any(text in line for line in self.output().splitlines() if f" {name}.1 " in line)


def procfile_names() -> list[str]:
    return [line.partition(":")[0] for line in PROCFILE.read_text().splitlines()]


def user_env_file(work: Path, values: dict[str, str]) -> None:
    """`cp .env.example .env`, pointed at the test's services: every key must be there already."""
    lines = (PROJECT_ROOT / ".env.example").read_text().splitlines()
    for key, value in values.items():
        index = next(i for i, line in enumerate(lines) if line.startswith(f"{key}="))
        lines[index] = f"{key}={value}"
    (work / ".env").write_text("\n".join(lines) + "\n")


@pytest.fixture
def honcho(without_thread_worker: None, tmp_path: Path) -> Iterator[Honcho]:
    """`honcho start` in a copy of the project's run-time files, with a `.env` of its own."""
    for name in ("Procfile", "alembic.ini"):
        shutil.copy(PROJECT_ROOT / name, tmp_path / name)
    port = free_port()
    database_url = os.environ.get("TEST_DATABASE_URL") or f"sqlite:///{tmp_path / 'app.db'}"
    user_env_file(
        tmp_path,
        {
            "DATABASE_URL": database_url,
            "BROKER_URL": os.environ["BROKER_URL"],
            "PORT": str(port),
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(SMTP_PORT),
            "UPLOAD_DIR": str(tmp_path / "uploads"),
            "WORKER_HEARTBEAT_DIR": str(heartbeats := tmp_path / "heartbeats"),
        },
    )
    # A user's shell: none of the settings the other tests put in this process's environment.
    skip = {*TEST_ENV, "BROKER_URL", "TEST_BROKER_URL", "TEST_DATABASE_URL"}
    env = {key: value for key, value in os.environ.items() if key not in skip}
    bin_dir = str(Path(sys.executable).parent)
    env |= {"PATH": f"{bin_dir}{os.pathsep}{env['PATH']}", "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "honcho.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(Path(bin_dir) / "honcho"), "start"],
            cwd=tmp_path,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    honcho = Honcho(process, log, port, env | {"WORKER_HEARTBEAT_DIR": str(heartbeats)})
    try:
        yield honcho
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # honcho stops its processes, as on Ctrl-C
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def worker_alive(honcho: Honcho, name: str) -> bool:
    command = [sys.executable, "-m", "{{ cookiecutter.package_name }}.health", name]
    return subprocess.run(command, env=honcho.env, capture_output=True, check=False).returncode == 0


def test_honcho_start_runs_the_whole_procfile_and_keeps_it_running(honcho: Honcho) -> None:
    names = procfile_names()
    assert names[0] == "web", "honcho gives PORT to the first process of the Procfile"
    honcho.wait_for("migration", lambda: honcho.said("release", IDLE))
{%- if cookiecutter.task_queue == "celery" and cookiecutter.broker != "sqs" %}
    honcho.wait_for("idle Flower", lambda: honcho.said("flower", IDLE))
    assert honcho.said("flower", "FLOWER_BASIC_AUTH"), "Flower says why it does not serve"
{%- endif %}
    honcho.wait_for("/health", lambda: healthy(f"http://127.0.0.1:{honcho.port}/health"))
    for name in ("worker", "file_worker"):
        honcho.wait_for(f"{name}'s heartbeat", functools.partial(worker_alive, honcho, name))

    # Every process of the Procfile started once, and each one still runs.
    started = dict(STARTED.findall(honcho.output()))
    assert sorted(started) == sorted(names), started
    assert not STOPPED.findall(honcho.output()), honcho.output()[-6000:]
    for pid in started.values():
        os.kill(int(pid), 0)  # raises if the process is gone
    assert honcho.process.poll() is None
