"""Real services for the generated projects' test suites: Redis, RabbitMQ, PostgreSQL, SQS.

Point REDIS_URL, RABBITMQ_URL (a vhost of its own) and POSTGRES_URL elsewhere to run two
verifications on one machine at once; the databases made here carry this run's token.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
RABBITMQ_URL = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")
POSTGRES_URL = os.environ.get("POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
RUN = uuid.uuid4().hex[:8]  # names this run's databases apart from another run's


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, alive: Callable[[], None], timeout: float = 60) -> None:
    """Wait until something answers on `port`; `alive()` raises if its server has exited."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing answers on port {port}") from None
            time.sleep(0.1)


@contextmanager
def moto_server() -> Iterator[str]:
    """A local SQS endpoint: moto's server, in a process group of its own."""
    server = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    assert server, "moto_server is missing: install the template's dev dependencies"
    port = free_port()
    process = subprocess.Popen(
        [server, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )

    def alive() -> None:
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited with {process.returncode}")

    try:
        wait_for_port(port, alive)
        yield f"sqs://test:test@127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="session")
def sqs_url() -> Iterator[str]:
    """A local SQS endpoint for this session."""
    with moto_server() as url:
        yield url


def broker_url(broker: str, index: int, sqs: str) -> str:
    """A broker for one bake's tests; Redis gets a database of its own."""
    return {"redis": f"{REDIS_URL}/{index % 16}", "rabbitmq": RABBITMQ_URL, "sqs": sqs}[broker]


class Databases:
    """PostgreSQL databases made for one bake each, dropped afterwards."""

    def __init__(self) -> None:
        self.made: list[str] = []

    def create(self, name: str) -> str:
        name = f"{name}_{RUN}"
        with psycopg.connect(f"{POSTGRES_URL}/postgres", autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            connection.execute(f'CREATE DATABASE "{name}"')
        self.made.append(name)
        return f"{POSTGRES_URL}/{name}"

    def drop_all(self) -> None:
        with psycopg.connect(f"{POSTGRES_URL}/postgres", autocommit=True) as connection:
            for name in self.made:
                connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def databases() -> Iterator[Databases]:
    made = Databases()
    yield made
    made.drop_all()


class TypeCheckCaches:
    """mypy's caches, one for each Python and queue, shared between the bakes of a session.

    A bake starts from the cache of the first bake like it to finish its type check: mypy takes an
    entry only where the module's content and options are the same, so it re-analyses the package
    itself and whatever differs, about a third of a cold run's CPU. Each bake works on a copy, and
    a cache is offered whole by a rename, never changed afterwards: mypy's own cache is not made
    for several processes at once.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def seed(self, project: Path, key: str) -> None:
        if (self.root / key).is_dir():
            shutil.copytree(self.root / key, project / ".mypy_cache")

    def offer(self, project: Path, key: str) -> None:
        copy = self.root / f"{key}.{uuid.uuid4().hex}"
        shutil.copytree(project / ".mypy_cache", copy)
        try:
            copy.rename(self.root / key)
        except OSError:  # another bake offered one first
            shutil.rmtree(copy)


@pytest.fixture(scope="session")
def type_check_caches(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> TypeCheckCaches:
    base = tmp_path_factory.getbasetemp()
    root = (base if worker_id == "master" else base.parent) / "mypy-caches"
    root.mkdir(exist_ok=True)
    return TypeCheckCaches(root)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Follow each full bake with a quick test. Under xdist a worker is handed the test after the
    one it runs before it starts it (`--maxschedchunk 1` keeps it to one), so a bake queued behind
    a bake would wait minutes while another worker stood idle; a quick test does not."""
    bakes = [item for item in items if getattr(item, "originalname", "") == "test_combination"]
    quick = [item for item in items if item not in bakes]
    interleaved = [item for pair in zip(bakes, quick, strict=False) for item in pair]
    items[:] = interleaved + bakes[len(quick) :] + quick[len(bakes) :]
