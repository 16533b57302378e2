"""The two sides of a combination: the baked project and the bare seed app, ready to start.

The project is baked from a template, installed in a virtual environment of its own and
migrated; the bare app (`seed/`) runs with the project's installed libraries. Both get the same
broker, SMTP server and, for the project, a database of its own, found or started as the
verification does (tests/conftest.py).
"""

import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.checks import clean_env, find_python, run, uv
from tests.conftest import RABBITMQ_URL, Databases, free_port, moto_server, wait_for_port

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "benchmarks" / "seed"
REDIS_URL = os.environ.get("REDIS_URL")  # unset: a private redis-server for the run
COOKIECUTTER = shutil.which("cookiecutter", path=str(Path(sys.executable).parent)) or "cookiecutter"

# Run with the project's own Python, which has the broker's client library.
FLUSH_REDIS = "import sys, redis; redis.Redis.from_url(sys.argv[1]).flushdb()"
DELETE_AMQP_QUEUES = """
import sys
from kombu import Connection
with Connection(sys.argv[1]) as connection:
    channel = connection.default_channel
    for name in sys.argv[2:]:
        channel.queue_delete(name)
        channel.exchange_delete(name)
"""


@dataclass(frozen=True)
class Project:
    """A baked and installed project."""

    path: Path
    package: str
    env: dict[str, str]

    @property
    def python(self) -> str:
        return str(self.path / ".venv" / "bin" / "python")


@dataclass(frozen=True)
class Side:
    """What to start for one side: commands by name (`web`, `worker`, ...), where and how."""

    commands: dict[str, str]
    cwd: Path
    env: dict[str, str]


def bake(combo: dict[str, str], template: Path, python: str, work: Path) -> Project:
    """Bake the combination from `template` into `work` and install it, without dev tools."""
    token = secrets.token_hex(3)
    context = {**combo, "project_name": f"Bench {token}", "use_docker": "no"}
    env = clean_env()
    answers = [f"{key}={value}" for key, value in context.items()]
    run([COOKIECUTTER, str(template), "--no-input", "-o", str(work), *answers], ROOT, env)
    project = Project(work / f"bench-{token}", f"bench_{token}", env)
    run([uv(), "venv", "-q", "--python", find_python(python), ".venv"], project.path, env)
    run([uv(), "sync", "-q", "--no-dev"], project.path, env)
    if combo["task_queue"] == "arq":  # the bare ARQ worker's SMTP client
        install = [uv(), "pip", "install", "-q", "--python", project.python, "aiosmtplib"]
        run(install, project.path, env)
    return project


@contextmanager
def redis_server() -> Iterator[str]:
    """REDIS_URL, emptied before and after; or a private redis-server for this run."""
    if REDIS_URL:
        yield REDIS_URL
        return
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_port(port, lambda: None)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(timeout=10)


@contextmanager
def services(combo: dict[str, str], project: Project, work: Path) -> Iterator[tuple[str, str]]:
    """The broker's URL and the project's database URL, emptied or dropped afterwards."""
    with ExitStack() as stack:
        if combo["broker"] == "redis":
            broker = stack.enter_context(redis_server())
            flush = [project.python, "-c", FLUSH_REDIS, broker]
            run(flush, project.path, project.env)
            stack.callback(run, flush, project.path, project.env)
        elif combo["broker"] == "rabbitmq":
            broker = RABBITMQ_URL
            queues = [project.package, f"{project.package}.files", seed_queue(project)]
            delete = [project.python, "-c", DELETE_AMQP_QUEUES, broker, *queues]
            stack.callback(run, delete, project.path, project.env)
        else:
            broker = stack.enter_context(moto_server())
        if combo["database"] == "postgresql":
            databases = Databases()
            stack.callback(databases.drop_all)
            database = databases.create(project.package)
        else:
            database = f"sqlite:///{work / 'project.db'}"
        yield broker, database


def seed_queue(project: Project) -> str:
    return f"seed_{project.package.removeprefix('bench_')}"


def seed_commands(combo: dict[str, str]) -> dict[str, str]:
    """The bare app's processes, served as a seed app is: by uvicorn or gunicorn, defaults."""
    queue, framework = combo["task_queue"], combo["web_framework"]
    web = {
        "fastapi": f"uvicorn {framework}_{queue}:app --host 127.0.0.1 --port $PORT",
        "flask": f"gunicorn --bind 127.0.0.1:$PORT {framework}_{queue}:app",
    }
    worker = {
        "celery": "celery -A celery_tasks worker --loglevel INFO",
        "arq": "arq arq_tasks.WorkerSettings",
    }
    return {"web": web[framework], "worker": worker[queue]}


def procfile(project: Path) -> dict[str, str]:
    entries = {}
    for line in (project / "Procfile").read_text().splitlines():
        name, colon, command = line.partition(":")
        if colon and not line.startswith("#"):
            entries[name.strip()] = command.strip()
    return entries


def sides(
    combo: dict[str, str], project: Project, broker: str, database: str, smtp_port: int, work: Path
) -> dict[str, Side]:
    """Both sides, the project migrated: its web and worker processes, and the bare app's."""
    bin_path = str(project.path / ".venv" / "bin")
    common = project.env | {
        "BROKER_URL": broker,
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp_port),
        "PATH": f"{bin_path}{os.pathsep}{project.env['PATH']}",
        "VIRTUAL_ENV": str(project.path / ".venv"),
    }
    project_env = common | {"DATABASE_URL": database, "UPLOAD_DIR": str(work / "uploads")}
    entries = procfile(project.path)
    run(["/bin/sh", "-c", entries["release"]], project.path, project_env)
    bare_env = common | {"SEED_QUEUE": seed_queue(project), "PYTHONPATH": str(SEED)}
    project_commands = {n: c for n, c in entries.items() if n == "web" or "worker" in n}
    return {
        "project": Side(project_commands, project.path, project_env),
        "bare": Side(seed_commands(combo), SEED, bare_env),
    }
