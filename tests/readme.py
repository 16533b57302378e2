"""A generated project's README, followed as a newcomer follows it.

The commands come from the README itself: its set-up lines, the SMTP catcher it suggests, `cp
.env.example .env`, the migration, `honcho start` as it is given, and then its
`curl` lines, on the port it gives, each answer compared with the one the README shows. Only the
services change: `.env` is pointed at the verification's broker, database and catcher.
"""

import contextlib
import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.checks import run

# What the README's example answers leave out: a value, or (before a closing brace) more keys.
ELIDED = "…"


@dataclass
class Command:
    line: str  # one shell command, continuation lines joined
    shown: str  # the answer the README shows for it, from the comment lines that follow it


def section(readme: str, heading: str) -> str:
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", readme, re.M | re.S)
    assert match, f"the README has no '## {heading}' section"
    return match.group(1)


def code_blocks(text: str) -> list[list[Command]]:
    """The ```sh blocks of a text, as commands."""
    return [commands(block) for block in re.findall(r"^```sh\n(.*?)^```", text, re.M | re.S)]


def commands(block: str) -> list[Command]:
    """A block's commands; a comment right below one that starts with `{` shows its answer."""
    found: list[Command] = []
    pending, answering = "", False
    for raw in block.splitlines():
        line = raw.strip()
        if pending:
            line, pending = f"{pending} {line}", ""
        comment = line.lstrip("#").strip()
        if line.endswith("\\"):
            pending = line[:-1].strip()
        elif line.startswith("#") and answering and comment.startswith(("{", "[")):
            found[-1].shown += comment + "\n"
        elif line.startswith("#") or not line:
            answering = False
        else:
            found.append(Command(line, ""))
            answering = True
    return found


def without_comment(line: str) -> str:
    return re.sub(r"\s+#\s.*$", "", line)


def shown_json(shown: str) -> Any:
    """The README's example answer as JSON, with `…` as a wildcard value."""
    text = re.sub(rf",\s*{ELIDED}\s*}}", "}", shown.strip())
    text = re.sub(rf"(?<=[:\[,] ){ELIDED}", f'"{ELIDED}"', text)
    return json.loads(text)


def matches(shown: Any, actual: Any) -> bool:
    if isinstance(shown, dict):
        return isinstance(actual, dict) and all(
            key in actual and matches(value, actual[key]) for key, value in shown.items()
        )
    if shown == ELIDED:
        return True
    if isinstance(shown, str) and ELIDED in shown:
        head, _, tail = shown.partition(ELIDED)
        return isinstance(actual, str) and actual.startswith(head) and actual.endswith(tail)
    return bool(shown == actual)


@contextlib.contextmanager
def port_of_my_own(port: int) -> Iterator[None]:
    """The README names one port: one walk-through at a time on this machine uses it."""
    lock = Path(tempfile.gettempdir()) / f"task-queue-readme-port-{port}.lock"
    with lock.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        deadline = time.monotonic() + 10  # for the previous walk-through's last process to go
        while _listening(port):
            assert time.monotonic() < deadline, (
                f"port {port}, the README's, is taken by another program"
            )
            time.sleep(0.2)
        yield


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def background(command: str, cwd: Path, env: dict[str, str], log: Path) -> Iterator[Path]:
    """A README command left running, as in a second terminal; stopped with its children."""
    with log.open("w") as output:
        process = subprocess.Popen(
            ["bash", "-c", command],
            cwd=cwd,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield log
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_until(check: Any, what: str, logs: list[Path], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {log.name}\n{log.read_text()[-4000:]}" for log in logs)
            raise AssertionError(f"{what}: not within {timeout:.0f}s\n{tails}")
        time.sleep(0.5)


def set_env_file(path: Path, values: dict[str, str]) -> None:
    """Point the copied .env at the verification's services; every key must be there already."""
    lines = path.read_text().splitlines()
    for key, value in values.items():
        index = next(i for i, line in enumerate(lines) if line.startswith(f"{key}="))
        lines[index] = f"{key}={value}"
    path.write_text("\n".join(lines) + "\n")


def walk_through(
    project: Path, env: dict[str, str], services: dict[str, str], smtp_port: int
) -> None:
    """Follow the README: set up, run it, try each job by hand."""
    readme = (project / "README.md").read_text()
    setup = [without_comment(c.line) for c in code_blocks(section(readme, "Set up and test"))[0]]
    assert setup == ["uv sync", "uv run pytest"], setup  # what the verification has just run

    run_it = [c for block in code_blocks(section(readme, "Run it")) for c in block]
    catcher = next(c.line for c in run_it if "aiosmtpd" in c.line)
    assert "localhost:1025" in catcher
    catcher = without_comment(catcher).replace("localhost:1025", f"localhost:{smtp_port}")
    start_at = next(i for i, c in enumerate(run_it) if c.line.startswith("cp .env.example .env"))
    honcho = next(i for i, c in enumerate(run_it) if " honcho start " in c.line)
    steps, start = run_it[start_at:honcho], without_comment(run_it[honcho].line)
    url = re.search(r"http://localhost:(\d+)", run_it[honcho].line)
    assert url, "the README says where the web process listens"
    port = int(url.group(1))

    logs = [project / "smtp.log", project / "honcho.log"]
    env = {**env, "PYTHONUNBUFFERED": "1"}
    with (
        background(catcher, project, env, logs[0]),
        port_of_my_own(port),
    ):
        for step in steps:
            run(["bash", "-c", step.line], project, env)
            if step.line.startswith("cp .env.example .env"):
                set_env_file(project / ".env", {**services, "SMTP_PORT": str(smtp_port)})
        with background(start, project, env, logs[1]):
            wait_until(lambda: answers(f"http://127.0.0.1:{port}/health"), "web", logs)
            try_each_job(project, readme, env, port, logs)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def curl(command: str, project: Path, env: dict[str, str]) -> Any:
    output = run(["bash", "-c", command], project, env, timeout=30)
    try:
        return json.loads(output)
    except json.JSONDecodeError as error:
        raise AssertionError(f"{command} answered {output!r}, not JSON") from error


def try_each_job(
    project: Path, readme: str, env: dict[str, str], port: int, logs: list[Path]
) -> None:
    """Every command of 'Try each job by hand'; each job followed until it succeeds."""
    block = code_blocks(section(readme, "Try each job by hand"))[0]  # the webhook needs a receiver
    status = next(c for c in block if "<job_id>" in c.line)
    for command in block:
        assert "localhost:" not in command.line or f"localhost:{port}/" in command.line, command
        if command is status:
            continue
        if "@photo.jpg" in command.line:  # "any image": a person has one at hand
            python = project / ".venv" / "bin" / "python"
            make = "from PIL import Image; Image.new('RGB', (640, 480), 'teal').save('photo.jpg')"
            run([str(python), "-c", make], project, env)
        if not command.line.startswith("curl"):
            run(["bash", "-c", command.line], project, env)
            continue
        answer = curl(command.line, project, env)
        if command.shown:
            assert matches(shown_json(command.shown), answer), (command.line, answer)
        if "job_id" not in answer:
            assert answer.get("status") == "ok", (command.line, answer)
            continue
        check = status.line.replace("<job_id>", answer["job_id"])
        job = wait_until(
            lambda check=check: (job := curl(check, project, env))["status"] == "succeeded" and job,
            f"{command.line} -> {check}",
            logs,
        )
        if status.shown and answer["kind"] == "welcome_email":
            assert matches(shown_json(status.shown), job), (check, job)
            # "It appears in the SMTP catcher's output."
            found = re.search(r"[\w.+-]+@[\w-]+\.[\w.-]+", command.line)
            assert found, command.line
            address = found[0]
            wait_until(lambda a=address: a in logs[0].read_text(), "the email", logs)
        assert job["result"], job
