"""Ports and processes for the tests."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PROCFILE = PROJECT_ROOT / "Procfile"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process and its children, as a crashed machine would."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def stop(*processes: subprocess.Popen[bytes]) -> None:
    """SIGTERM processes and their children, all at once, and wait for them to exit."""
    for process in processes:
        os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        process.wait(timeout=30)


def procfile_command(process: str) -> str:
    for line in PROCFILE.read_text().splitlines():
        name, _, command = line.partition(":")
        if name == process:
            return command.strip()
    raise LookupError(process)


def start_procfile(
    process: str, env: dict[str, str], cwd: Path, output: IO[bytes] | None = None
) -> subprocess.Popen[bytes]:
    """One of the Procfile's processes, started as honcho starts it, in a process group of its
    own (as on a host of its own)."""
    bin_dir = str(Path(sys.executable).parent)
    env = env | {"PATH": f"{bin_dir}{os.pathsep}{env['PATH']}"}
    return subprocess.Popen(
        ["/bin/sh", "-c", f"exec {procfile_command(process)}"],
        env=env,
        cwd=cwd,
        stdout=output,
        stderr=subprocess.STDOUT if output else None,
        start_new_session=True,
    )


@contextmanager
def web_process(**env: str) -> Iterator[str]:
    """The Procfile's web process, with this environment and `env`; its base URL once it answers."""
    port = free_port()
    process = start_procfile("web", os.environ | {"PORT": str(port), **env}, PROJECT_ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{base}/jobs/-", timeout=10).close()
                break
            except urllib.error.HTTPError:
                break  # it answers (404: there is no such job)
            except OSError:
                assert process.poll() is None, "the web process exited"
                assert time.monotonic() < deadline, "the web process did not start"
                time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)
