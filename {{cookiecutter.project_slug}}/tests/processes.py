"""Ports and processes for the tests."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Self

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


def wait_until(
    condition: Callable[[], bool], failure: str | Callable[[], str], timeout: float = 30
) -> None:
    """Wait for `condition`; past `timeout`, fail with `failure` (or what it returns, then)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(failure if isinstance(failure, str) else failure())
        time.sleep(0.2)


def web_health(base: str) -> int:
    """The status of the web app's /health, or 0 while it does not listen."""
    try:
        urllib.request.urlopen(f"{base}/health", timeout=10).close()
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0
    return 200


class ProcessGroup:
    """The Procfile's processes `names`, with this environment and `env`, each logging to a file
    in `cwd`; the web process (if named) listens at `base`."""

    def __init__(self, names: Iterable[str], env: dict[str, str], cwd: Path) -> None:
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        # A process that will not stop is sent SIGABRT, on which Python writes every thread's
        # stack to its log before it dies: the test's failure then shows where it hung.
        self.env = os.environ | {"PORT": str(port), "PYTHONFAULTHANDLER": "1", **env}
        self.names = tuple(names)
        self.cwd = cwd
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def __enter__(self) -> Self:
        for name in self.names:
            with (self.cwd / f"{name}.log").open("wb") as log:
                self.processes[name] = start_procfile(name, self.env, self.cwd, log)
        return self

    def __exit__(self, *_: object) -> None:
        """SIGTERM every process still running, as honcho does; fail, with its log, for any that
        has not exited 30 s later (after making it write its stacks, and killing it)."""
        running = {n: p for n, p in self.processes.items() if p.poll() is None}
        for process in running.values():
            os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        stuck = []
        for name, process in running.items():
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError, subprocess.TimeoutExpired):
                    os.killpg(process.pid, signal.SIGABRT)
                    process.wait(timeout=5)
                with suppress(ProcessLookupError):
                    kill(process)
                stuck.append(name)
        if stuck:
            tails = ("\n".join([f"--- {n}:", *self.log(n).splitlines()[-80:]]) for n in stuck)
            raise AssertionError("still running 30s after SIGTERM:\n" + "\n".join(tails))

    def log(self, name: str) -> str:
        return (self.cwd / f"{name}.log").read_text(errors="replace")

    def running(self) -> bool:
        """True, or fail with the log of a process that exited."""
        for name, process in self.processes.items():
            if process.poll() is not None:
                tail = "\n".join(self.log(name).splitlines()[-30:])
                raise AssertionError(f"{name} exited ({process.returncode}):\n{tail}")
        return True
