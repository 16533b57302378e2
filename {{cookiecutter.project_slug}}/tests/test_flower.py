"""Flower, as the Procfile starts it: never open, and reachable with its credentials."""

import base64
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from pydantic import SecretStr

from tests.processes import free_port, procfile_command

# isort: split
from {{ cookiecutter.package_name }} import flower
from {{ cookiecutter.package_name }}.settings import Settings


def start_flower(env: dict[str, str], *options: str) -> subprocess.Popen[str]:
    bin_dir = str(Path(sys.executable).parent)
    env = os.environ | env | {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    command = " ".join([procfile_command("flower"), *options])
    return subprocess.Popen(
        ["/bin/sh", "-c", f"exec {command}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def status(url: str, credentials: str = "") -> int:
    request = urllib.request.Request(url)
    if credentials:
        token = base64.b64encode(credentials.encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.parametrize("credentials", ["", "ops", "ops:", ":s3cret", "ops:s3cret,guest"])
def test_flower_refuses_to_start_open(
    credentials: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(flower_basic_auth=SecretStr(credentials))
    monkeypatch.setattr(flower, "get_settings", lambda: settings)
    monkeypatch.delenv("HONCHO_PROCESS_NAME", raising=False)  # not under honcho: it exits
    assert flower.main([]) == 2
    assert "FLOWER_BASIC_AUTH" in capsys.readouterr().err


@pytest.mark.drill  # a second process start: verified once per broker, not in every combination
def test_flower_asks_for_its_credentials() -> None:
    port = free_port()
    # Flower asks the workers about themselves before it serves a page: keep that short here.
    options = f"--port={port}", "--address=127.0.0.1", "--inspect_timeout=100"
    process = start_flower({"FLOWER_BASIC_AUTH": "ops:s3cret"}, *options)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = status(url)
                break
            except OSError:
                assert process.poll() is None, process.communicate()[0]
                assert time.monotonic() < deadline, "Flower did not start"
                time.sleep(0.2)
        assert answer == 401
        assert status(url, "ops:wrong") == 401
        assert status(url, "ops:s3cret") == 200
    finally:
        process.kill()
        process.wait(timeout=30)
