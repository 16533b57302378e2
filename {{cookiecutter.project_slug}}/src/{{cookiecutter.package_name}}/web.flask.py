"""The HTTP API: sign up, upload a file, follow a job, check health; metrics and the dashboard.

Serve it with `gunicorn --threads 8 "{{ cookiecutter.package_name }}.web:create_app()"`; gunicorn runs
`WEB_CONCURRENCY` processes of it, each with 8 threads.
"""

{% if cookiecutter.task_queue == "arq" -%}
import asyncio
import threading
{% endif -%}
from collections.abc import Callable{% if cookiecutter.task_queue == "arq" %}, Coroutine{% endif %}
from typing import Any{% if cookiecutter.task_queue == "arq" %}, TypeVar{% endif %}

from flask import Blueprint, Flask, Response, jsonify, redirect, request
from flask.typing import ResponseReturnValue
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

from . import api, dashboard, database, files, jobs, logs, metrics, records, worker
from .records import Job
from .settings import Settings, get_settings
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


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or get_settings()
    logs.configure()  # the server's own loggers too: it loads the app after setting them up
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

    @app.errorhandler(dashboard.BadRequest)
    def bad_request(exc: dashboard.BadRequest) -> tuple[Response, int]:
        return error(exc.status, str(exc))

    def publish(job: Job) -> None:
        """Hand a recorded job to the queue, or raise jobs.BrokerUnavailable."""
{%- if cookiecutter.task_queue == "arq" %}
        portal.run(worker.enqueue(redis, job))
{%- else %}
        worker.enqueue(job)
{%- endif %}

    def dispatch(*recorded: Job) -> tuple[Response, int]:
        """Hand recorded jobs to the queue; if the broker is down, take them all back."""
        try:
            for job in recorded:
                publish(job)
        except jobs.BrokerUnavailable:
            for job in recorded:
                jobs.withdraw(job)
            return error(503, api.QUEUE_DOWN)
        return jsonify(api.accepted(*recorded)), 202

    @app.post("/signups")
    def create_signup() -> tuple[Response, int]:
        data = request.get_json(silent=True)
        if data is None:
            return error(400, "the body is not valid JSON")
        try:
            signup = api.SignupIn.model_validate(data)
        except ValidationError as exc:
            return error(422, "invalid request", detail=api.problems(exc.errors()))
        return dispatch(*jobs.record_signup(signup.email, signup.name))

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

    def queue_depths() -> dict[str, int] | None:
        """Messages in each queue, or None if the broker does not answer."""
        try:
{%- if cookiecutter.task_queue == "arq" %}
            return portal.run(worker.queue_depths(redis), timeout=5)
        except (jobs.BrokerUnavailable, TimeoutError):
{%- else %}
            return worker.queue_depths()
        except jobs.BrokerUnavailable:
{%- endif %}
            return None

    @app.get("/metrics")
    def prometheus_metrics() -> Response:
        accept = request.headers.get("Accept", "")
        body, content_type = metrics.exposition(queue_depths(), accept)
        return Response(body, content_type=content_type)

    credentials = dashboard.Credentials.configured(settings)
    if credentials is None:
        return app  # no dashboard without credentials: its paths answer 404

    board = Blueprint("dashboard", __name__)

    @board.before_request
    def authorize() -> tuple[Response, int] | None:
        if not credentials.accept(request.headers.get("Authorization")):
            response, status = error(401, "credentials required")
            response.headers.update(dashboard.CHALLENGE)
            return response, status
        headers = request.headers
        if request.method == "POST" and dashboard.cross_site(
            headers.get("Sec-Fetch-Site"), headers.get("Origin"), headers.get("Host")
        ):
            return error(403, "cross-site request refused")
        return None

    @board.post("/jobs/<job_id>/retry")
    def retry_job(job_id: str) -> tuple[Response, int]:
        """Queue a failed job again; if the broker is down, it stays failed."""
        job = dashboard.reopen(job_id)
        try:
            publish(job)
        except jobs.BrokerUnavailable:
            records.restore(job)
            return error(503, dashboard.QUEUE_DOWN)
        return jsonify(dashboard.requeued(job)), 202

    @board.get("/dashboard")
    def overview() -> Response:
        kind, status = request.args.get("kind"), request.args.get("status")
        page = dashboard.overview_page(settings, kind, status, queue_depths())
        return Response(page, headers=dashboard.PAGE_HEADERS)

    @board.get("/dashboard/jobs/<job_id>")
    def job_detail(job_id: str) -> Response:
        page = dashboard.job_page(settings, job_id)
        return Response(page, headers=dashboard.PAGE_HEADERS)

    @board.post("/dashboard/jobs/<job_id>/retry")
    def retry_from_dashboard(job_id: str) -> ResponseReturnValue:
        response, status = retry_job(job_id)
        if status != 202:
            return response, status
        return redirect(f"/dashboard/jobs/{job_id}", code=303)

    app.register_blueprint(board)
    return app


def _check(probe: Callable[[], None]) -> str:
    try:
        probe()
    except Exception as exc:
        return f"unavailable: {type(exc).__name__}: {exc}"
    return "ok"
