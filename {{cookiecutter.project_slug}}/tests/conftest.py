"""Test settings, a real SMTP server, a migrated database and an HTTP client.

Offline (the default) the tests use SQLite and {% if cookiecutter.task_queue == "celery" %}Celery's in-memory transport{% else %}fakeredis over TCP{% endif %}.
Give real services to run the same tests against them, and the ones that need a broker
shared between processes:

    TEST_BROKER_URL=... TEST_DATABASE_URL=... pytest

The tests empty the broker's queues and the database's tables: point these at services for tests.
"""

import asyncio
{% if cookiecutter.web_framework == "flask" -%}
import io
{% endif -%}
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from alembic import command
from alembic.config import Config
{%- if cookiecutter.web_framework == "fastapi" %}
from fastapi.testclient import TestClient
{%- endif %}
from sqlalchemy import func, select, text

from tests.processes import free_port

TMP = Path(tempfile.mkdtemp(prefix="{{ cookiecutter.package_name }}-tests-"))
SMTP_PORT = free_port()
TEST_ENV = {
    "DATABASE_URL": os.environ.get("TEST_DATABASE_URL") or f"sqlite:///{TMP / 'test.db'}",
    "SMTP_HOST": "127.0.0.1",
    "SMTP_PORT": str(SMTP_PORT),
    "SMTP_TIMEOUT": "3",
    "UPLOAD_DIR": str(TMP / "uploads"),
    "MAX_UPLOAD_BYTES": str(8 * 1024 * 1024),
    # Fast enough for tests, with the same shape as the defaults.
    "JOB_MAX_ATTEMPTS": "4",
    "RETRY_BACKOFF": "0.2",
    "RETRY_BACKOFF_MAX": "1",
    "JOB_LEASE": "3",
    "EMAIL_TIMEOUT": "3",
    "CLEANUP_TIMEOUT": "3",
    "STUCK_JOB_AFTER": "6",
    "DASHBOARD_USERNAME": "operator",
    "DASHBOARD_PASSWORD": "correct horse battery staple",
    "METRICS_TOKEN": "metrics-scraper-token",
    "METRICS_CACHE_SECONDS": "0",  # each scrape reads the figures the test just changed
    "WORKER_HEARTBEAT_DIR": str(TMP / "heartbeats"),
    "WORKER_HEARTBEAT_INTERVAL": "0.5",
{%- if cookiecutter.task_queue == "celery" and cookiecutter.broker != "rabbitmq" %}
    "BROKER_VISIBILITY_TIMEOUT": "4",
{%- endif %}
}
os.environ.update(TEST_ENV)

# The settings, broker included, must be in the environment before the app is imported.
from tests import workers  # noqa: E402

# isort: split
from {{ cookiecutter.package_name }} import database, models  # noqa: E402
from {{ cookiecutter.package_name }}.database import Base  # noqa: E402
from {{ cookiecutter.package_name }}.settings import Settings, get_settings  # noqa: E402
from {{ cookiecutter.package_name }}.web import create_app  # noqa: E402

from tests.receiver import SECRET, Receiver, configure, reload_settings  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]


class Mailbox:
    """An SMTP server's handler that keeps what it accepts, and can refuse, stall or take its
    time on request."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.delay = 0.0  # seconds each message takes to be accepted
        self.refuse_next = 0
        self.refusal = "451 4.3.0 Try again later"
        self.stall = threading.Event()  # while set, messages are held until released, then dropped
        self.stalled = threading.Event()  # set once a message is being held
        self.release = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refuse_next > 0:
            self.refuse_next -= 1
            return self.refusal
        if self.stall.is_set():
            self.stalled.set()
            await asyncio.to_thread(self.release.wait)
            return "421 4.3.2 Shutting down"
        await asyncio.sleep(self.delay)
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        return "250 OK"

    def to(self, address: str) -> list[EmailMessage]:
        return [message for message in self.messages if message["To"] == address]


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[Mailbox]:
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=SMTP_PORT)
    controller.start()
    yield mailbox
    controller.stop()


@pytest.fixture
def mailbox(smtp_server: Mailbox) -> Mailbox:
    smtp_server.refuse_next = 0
    smtp_server.delay = 0.0
    smtp_server.refusal = "451 4.3.0 Try again later"
    smtp_server.stall.clear()
    smtp_server.stalled.clear()
    smtp_server.release.clear()
    return smtp_server


@pytest.fixture(scope="session")
def migrated_database() -> None:
    """A database with an empty, current schema, made by the migrations themselves."""
    with database.engine().begin() as connection:
        Base.metadata.drop_all(connection)
        connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    config = Config(PROJECT_ROOT / "alembic.ini")
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")


@pytest.fixture(scope="session")
def worker(migrated_database: None, smtp_server: Mailbox) -> Iterator[workers.ThreadWorker]:
    """A real worker, running in this process, for the whole session."""
    workers.purge()
    thread_worker = workers.ThreadWorker()
    thread_worker.start()
    yield thread_worker
    thread_worker.stop()


@pytest.fixture
def without_thread_worker(worker: workers.ThreadWorker) -> Iterator[None]:
    """Leave the queue to worker processes for the length of a test."""
    worker.stop()
    try:
        yield
    finally:
        worker.start()


class Api:
    """The web app's HTTP API, as a client sees it."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def post_json(
        self, path: str, body: Any, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        return self._answer(self.client.post(path, json=body, headers=headers))

    def post_raw(self, path: str, content: bytes, content_type: str) -> tuple[int, Any]:
{%- if cookiecutter.web_framework == "fastapi" %}
        response = self.client.post(path, content=content, headers={"Content-Type": content_type})
{%- else %}
        response = self.client.post(path, data=content, content_type=content_type)
{%- endif %}
        return self._answer(response)

    def upload(
        self,
        path: str,
        field: str,
        filename: str,
        content: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
{%- if cookiecutter.web_framework == "fastapi" %}
        files = {field: (filename, content, content_type)}
        response = self.client.post(path, files=files, headers=headers)
{%- else %}
        data = {field: (io.BytesIO(content), filename, content_type)}
        response = self.client.post(
            path, data=data, content_type="multipart/form-data", headers=headers
        )
{%- endif %}
        return self._answer(response)

    def get(self, path: str) -> tuple[int, Any]:
        return self._answer(self.client.get(path))

    def wait_for_job(self, job_id: str, timeout: float = 30) -> dict[str, Any]:
        """Poll the job until it has finished."""
        deadline = time.monotonic() + timeout
        while True:
            status, job = self.get(f"/jobs/{job_id}")
            assert status == 200, job
            if job["status"] in {"succeeded", "failed", "cancelled"} or time.monotonic() > deadline:
                return dict(job)
            time.sleep(0.1)

    @staticmethod
    def _answer(response: Any) -> tuple[int, Any]:
{%- if cookiecutter.web_framework == "fastapi" %}
        return response.status_code, response.json()
{%- else %}
        return response.status_code, response.get_json()
{%- endif %}


@contextmanager
def served(settings: Settings | None = None) -> Iterator[Api]:
    """The web app made with these settings (the process's by default), and a client for it."""
{%- if cookiecutter.web_framework == "fastapi" %}
    with TestClient(create_app(settings)) as client:
        yield Api(client)
{%- else %}
    yield Api(create_app(settings).test_client())
{%- endif %}


@pytest.fixture(scope="session")
def api(worker: workers.ThreadWorker) -> Iterator[Api]:
    with served() as client:
        yield client


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    """Webhooks on, sent to a receiver of this test's own."""
    with Receiver() as started:
        configure(
            monkeypatch,
            WEBHOOK_URL=started.url,
            WEBHOOK_SECRET=SECRET,
            WEBHOOK_ALLOWED_HOSTS="127.0.0.1",
            WEBHOOK_CONNECT_TIMEOUT="1",
            WEBHOOK_READ_TIMEOUT="0.5",
            WEBHOOK_RATE_LIMIT="100",
        )
        yield started
    monkeypatch.undo()
    reload_settings()


def stored_files() -> set[str]:
    upload_dir = get_settings().upload_dir
    return {path.name for path in upload_dir.iterdir()} if upload_dir.exists() else set()


def full_error(job_id: str) -> str:
    """A job's last error in full, as the dashboard shows it (the public API shows a summary)."""
    with database.session() as db:
        job = db.get(models.Job, job_id)
    assert job is not None
    return job.error or ""


def count_rows() -> dict[str, int]:
    with database.session() as db:
        return {
            "jobs": db.scalar(select(func.count()).select_from(models.Job)) or 0,
            "signups": db.scalar(select(func.count()).select_from(models.Signup)) or 0,
        }
