"""The HTTP API: sign up, upload a file, follow a job, check health.

Serve it with `gunicorn --threads 8 "{{ cookiecutter.package_name }}.web:create_app()"`; gunicorn runs
`WEB_CONCURRENCY` processes of it, each with 8 threads.
"""

{% if cookiecutter.task_queue == "arq" -%}
import asyncio
import threading
{% endif -%}
from collections.abc import Callable{% if cookiecutter.task_queue == "arq" %}, Coroutine{% endif %}
from typing import Any{% if cookiecutter.task_queue == "arq" %}, TypeVar{% endif %}

from flask import Flask, Response, jsonify, request
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

from . import api, database, files, jobs, records, worker
from .records import Job
from .settings import get_settings
{%- if cookiecutter.task_queue == "arq" %}

T = TypeVar("T")


class EventLoopThread:
    """One event loop per process, in its own thread, for the async Redis pool of ARQ."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="arq-client", daemon=True).start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 10) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)
{%- endif %}


def error(status: int, message: str, **extra: Any) -> tuple[Response, int]:
    return jsonify({"error": message, **extra}), status


def create_app() -> Flask:
    settings = get_settings()
    app = Flask(__name__)
    # Werkzeug answers 413 itself as soon as a request body passes this size.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes + api.MULTIPART_OVERHEAD
{%- if cookiecutter.task_queue == "arq" %}
    portal = EventLoopThread()
    redis = worker.connect()
{%- endif %}

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        return error(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(OperationalError)
    def database_down(exc: OperationalError) -> tuple[Response, int]:
        return error(503, api.DATABASE_DOWN)

    def dispatch(job: Job) -> tuple[Response, int]:
        """Hand a recorded job to the queue; if the broker is down, take the job back."""
        try:
{%- if cookiecutter.task_queue == "arq" %}
            portal.run(worker.enqueue(redis, job))
{%- else %}
            worker.enqueue(job)
{%- endif %}
        except jobs.BrokerUnavailable:
            jobs.withdraw(job)
            return error(503, api.QUEUE_DOWN)
        return jsonify(api.accepted(job)), 202

    @app.post("/signups")
    def create_signup() -> tuple[Response, int]:
        data = request.get_json(silent=True)
        if data is None:
            return error(400, "the body is not valid JSON")
        try:
            signup = api.SignupIn.model_validate(data)
        except ValidationError as exc:
            return error(422, "invalid request", detail=api.problems(exc.errors()))
        job = records.create_signup_job(signup.email, signup.name)
        return dispatch(job)

    @app.post("/files")
    def upload_file() -> tuple[Response, int]:
        upload = request.files.get("file")
        if upload is None:
            return error(422, "send the file as the multipart form field 'file'")
        limit = settings.max_upload_bytes
        try:
            content_type = upload.mimetype or "application/octet-stream"
            stored = files.store(upload.stream, upload.filename or "", content_type, limit)
        except files.UploadTooLarge as exc:
            return error(413, str(exc))
        return dispatch(jobs.record_upload(stored))

    @app.get("/jobs/<job_id>")
    def get_job(job_id: str) -> tuple[Response, int]:
        job = records.get_job(job_id) if api.is_job_id(job_id) else None
        if job is None:
            return error(404, f"no job with id {job_id!r}")
        return jsonify(job.to_dict()), 200

    @app.get("/health")
    def health() -> tuple[Response, int]:
        checks = {
            "database": _check(database.ping),
{%- if cookiecutter.task_queue == "arq" %}
            "broker": _check(lambda: portal.run(worker.ping(redis), timeout=5)),
{%- else %}
            "broker": _check(worker.ping),
{%- endif %}
        }
        healthy = all(result == "ok" for result in checks.values())
        body = {"status": "ok" if healthy else "unavailable", "checks": checks}
        return jsonify(body), 200 if healthy else 503

    return app


def _check(probe: Callable[[], None]) -> str:
    try:
        probe()
    except Exception as exc:
        return f"unavailable: {type(exc).__name__}: {exc}"
    return "ok"
