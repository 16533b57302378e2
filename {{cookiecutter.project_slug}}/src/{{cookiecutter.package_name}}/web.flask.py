"""The HTTP API and the jobs dashboard, served by Flask: routing and HTTP translation of the
use cases in `service`, nothing more.

Serve it as the Procfile does, with `gunicorn_config.py`: `WEB_CONCURRENCY` processes of it, each
with 8 threads.
"""

from functools import partial
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, redirect, request
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from . import api, client, dashboard, files, forms, logs, tracing
from .api import Refused
from .service import Service
from .settings import Settings, get_settings

api_routes = Blueprint("api", __name__)
board = Blueprint("dashboard", __name__)


def service() -> Service:
    found: Service = current_app.extensions["service"]
    return found


def answer(model: BaseModel, status: int = 200) -> tuple[Response, int]:
    return jsonify(model.model_dump(mode="json", exclude_none=True)), status


def error(status: int, message: str, **extra: Any) -> tuple[Response, int]:
    return jsonify({"error": message, **extra}), status


@api_routes.post("/signups")
def create_signup() -> ResponseReturnValue:
    data = request.get_json(silent=True)
    if data is None:
        return error(400, "the body is not valid JSON")
    try:
        signup = api.SignupIn.model_validate(data)
    except ValidationError as exc:
        return error(422, "invalid request", detail=api.problems(exc.errors()))
    return answer(service().sign_up(signup, request.headers.get("Idempotency-Key")), 202)


@api_routes.post("/files")
def upload_file() -> ResponseReturnValue:
    chunks = iter(partial(request.stream.read, 64 * 1024), b"")
    form = forms.FilePart(chunks, request.content_type or "", service().settings.max_upload_bytes)
    key = request.headers.get("Idempotency-Key")
    return answer(service().upload(form, form.filename, form.content_type, key), 202)


@api_routes.get("/jobs/<job_id>")
def get_job(job_id: str) -> ResponseReturnValue:
    return jsonify(service().job(job_id).model_dump(mode="json")), 200


@api_routes.get("/health")
def health() -> ResponseReturnValue:
    checked = service().health()
    return answer(checked, 200 if checked.status == "ok" else 503)


@api_routes.get("/metrics")
def prometheus_metrics() -> Response:
    headers = request.headers
    body, content_type = service().metrics(headers.get("Accept", ""), headers.get("Authorization"))
    return Response(body, content_type=content_type)


@board.before_request
def authorize() -> ResponseReturnValue | None:
    """The dashboard's credentials, and no changes from another site's page."""
    credentials = dashboard.Credentials.configured(service().settings)
    if credentials is None or not credentials.accept(request.headers.get("Authorization")):
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
def retry_job(job_id: str) -> ResponseReturnValue:
    return answer(service().retry(job_id), 202)


@board.post("/jobs/<job_id>/cancel")
def cancel_job(job_id: str) -> ResponseReturnValue:
    return jsonify(service().cancel(job_id).model_dump(mode="json")), 200


@board.get("/dashboard")
def overview() -> Response:
    kind, status = request.args.get("kind"), request.args.get("status")
    page = service().overview_page(kind or None, status or None)
    return Response(page, headers=dashboard.PAGE_HEADERS)


@board.get("/dashboard/jobs/<job_id>")
def job_detail(job_id: str) -> Response:
    return Response(service().job_page(job_id), headers=dashboard.PAGE_HEADERS)


@board.post("/dashboard/jobs/<job_id>/<any(retry, cancel):action>")
def act_from_dashboard(job_id: str, action: str) -> ResponseReturnValue:
    """The dashboard's buttons: retry or cancel, then back to the job's page."""
    if action == "retry":
        service().retry(job_id)
    else:
        service().cancel(job_id)
    return redirect(f"/dashboard/jobs/{job_id}", code=303)


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or get_settings()
    logs.configure()  # the server's own loggers too: it loads the app after setting them up
    app = Flask(__name__)
    # Werkzeug answers 413 itself as soon as a request body passes this size.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes + api.MULTIPART_OVERHEAD
    if tracing.configure("web"):
        from opentelemetry.instrumentation.flask import FlaskInstrumentor

        paths = ",".join(f"{path}$" for path in tracing.UNTRACED_PATHS)
        FlaskInstrumentor.instrument_app(app, excluded_urls=paths)  # type: ignore[no-untyped-call]
    app.extensions["service"] = Service(settings, client.Client(settings))

    @app.errorhandler(Refused)
    def refused(exc: Refused) -> ResponseReturnValue:
        response, status = error(exc.status, str(exc))
        response.headers.update(exc.headers)
        return response, status

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(exc: RequestEntityTooLarge) -> ResponseReturnValue:
        return error(413, str(files.UploadTooLarge(settings.max_upload_bytes)))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> ResponseReturnValue:
        return error(exc.code or 500, exc.description or exc.name)

    app.register_blueprint(api_routes)
    if dashboard.Credentials.configured(settings) is not None:
        app.register_blueprint(board)  # without credentials, no dashboard: its paths answer 404
    return app
