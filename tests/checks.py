"""What every baked project must show, whatever its options."""

import ast
import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.combinations import COOKIECUTTER

# Modules and distributions that belong to one value of an option, and to no project without it.
MARKERS = {
    ("task_queue", "celery"): {"celery", "kombu"},
    ("task_queue", "arq"): {"arq", "fakeredis"},
    ("web_framework", "fastapi"): {"fastapi", "starlette", "uvicorn", "httpx2"},
    ("web_framework", "flask"): {"flask", "werkzeug", "gunicorn"},
    ("broker", "redis"): {"celery[redis]"},
    ("broker", "sqs"): {"boto3", "botocore", "moto", "celery[sqs]", "moto[server,sqs]"},
    ("database", "postgresql"): {
        "psycopg",
        "psycopg_pool",
        "psycopg[binary]",
        "psycopg[binary,pool]",
    },
    ("database", "sqlite"): {"filelock"},
}
JINJA = re.compile(r"{{|{%|{#|cookiecutter", re.IGNORECASE)


def text_files(project: Path) -> list[Path]:
    return [p for p in project.rglob("*") if p.is_file() and ".venv" not in p.parts]


def check_hygiene(project: Path, answers: dict[str, str]) -> None:
    """No template artefacts, and nothing of the options that were not chosen."""
    verbatim = COOKIECUTTER["_copy_without_render"]  # the project's own Jinja templates
    for path in text_files(project):
        if any(path.match(pattern) for pattern in verbatim):
            continue
        text = path.read_text()
        assert not JINJA.search(text), f"template artefact in {path}: {JINJA.search(text)}"
    manifest = COOKIECUTTER["_manifest"]
    for values in manifest.values():
        for value in values:
            suffix = f".{value}."
            leftovers = [p for p in text_files(project) if suffix in p.name]
            assert not leftovers, f"variant files left: {leftovers}"
    imported = set()
    for path in project.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split(".")[0])
    pyproject = (project / "pyproject.toml").read_text()
    required = re.findall(r'^\s+"([a-z0-9_.,\[\]-]+?)[<>=~!]', pyproject, re.MULTILINE)
    dependencies = {*required, *(name.partition("[")[0] for name in required)}
    for (option, value), markers in MARKERS.items():
        if answers[option] != value:
            unchosen = (markers & imported) | (markers & dependencies)
            assert not unchosen, f"{option}={answers[option]} still uses {unchosen}"


def check_docker(project: Path, answers: dict[str, str]) -> None:
    """With Docker: the image has the chosen Python; compose runs the Procfile's commands."""
    if answers["use_docker"] == "no":
        assert not (project / "Dockerfile").exists()
        return
    dockerfile = (project / "Dockerfile").read_text()
    assert f"FROM python:{answers['python_version']}-slim" in dockerfile
    services = yaml.safe_load((project / "docker-compose.yml").read_text())["services"]
    for line in (project / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name == "web":
            continue
        words = command.split()
        words = words[: words.index("--schedule")] if "--schedule" in words else words
        service = services["migrate" if name == "release" else name]
        assert service["command"][: len(words)] == words, (name, service["command"])


def find_python(version: str) -> str:
    """An interpreter for `version`: installed by pyenv, or on PATH (not a pyenv shim)."""
    pattern = os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python")
    candidates = sorted(glob.glob(pattern))
    found = shutil.which(f"python{version}")
    if found and "/shims/" not in found:
        candidates.append(found)
    assert candidates, f"no Python {version} on this machine: install it to verify these bakes"
    return candidates[-1]


def uv() -> str:
    found = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    assert found, "uv is missing: install the template's dev dependencies"
    return found


def run(
    command: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 900
) -> str:
    """Run a command; fail the test with its output if it fails."""
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, (
        f"{' '.join(command)} failed ({result.returncode}):\n{output[-6000:]}"
    )
    return output


def start(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """Start a command in the background; `finish` checks it."""
    return subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(process: subprocess.Popen[str], timeout: float = 900) -> None:
    output, _ = process.communicate(timeout=timeout)
    command = " ".join(map(str, process.args))  # type: ignore[arg-type]
    assert process.returncode == 0, f"{command} failed ({process.returncode}):\n{output[-6000:]}"


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the template's virtualenv, for a project's own tools.

    Bytecode is written: each test suite starts several Python processes (workers, a web server),
    and recompiling their imports in every one of them would double the verification's time.
    """
    skip = {"VIRTUAL_ENV", "PYTHONPATH", "UV_PROJECT_ENVIRONMENT", "PYTHONDONTWRITEBYTECODE"}
    env = {key: value for key, value in os.environ.items() if key not in skip}
    return {**env, "UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1", **extra}


def ruff(project: Path) -> None:
    tool = shutil.which("ruff", path=str(Path(sys.executable).parent)) or "ruff"
    run([tool, "check", "--no-cache", "."], project)
    run([tool, "format", "--no-cache", "--check", "."], project)
