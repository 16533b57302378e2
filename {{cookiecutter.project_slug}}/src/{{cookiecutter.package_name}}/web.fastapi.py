"""The HTTP API and the jobs dashboard, served by FastAPI: routing and HTTP translation of the
use cases in `service`, nothing more.

Serve it with `uvicorn --factory {{ cookiecutter.package_name }}.web:create_app`; uvicorn runs
`WEB_CONCURRENCY` processes of it.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from anyio import from_thread
from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from fastapi.telemetry import TelemetryConfig
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from . import api, client, dashboard, forms, logs, tracing
from .api import Refused
from .service import Service
from .settings import Settings, get_settings


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The error answers of a route, for /openapi.json: each one's model and meaning."""
    return {status: {"model": api.Error, "description": api.ERRORS[status]} for status in statuses}


def get_service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]
basic_auth = HTTPBasic(realm="jobs dashboard", auto_error=False)


def authorize(
    request: Request,
    service: ServiceDep,
    credentials: Annotated[HTTPBasicCredentials | None, Depends(basic_auth)],
) -> None:
    """The dashboard's credentials, and no changes from another site's page."""
    allowed = dashboard.Credentials.configured(service.settings)
    given = credentials and (credentials.username.encode(), credentials.password.encode())
    if allowed is None or not given or not allowed.match(*given):
        raise StarletteHTTPException(401, "credentials required", headers=dashboard.CHALLENGE)
    headers = request.headers
    if request.method == "POST" and dashboard.cross_site(
        headers.get("sec-fetch-site"), headers.get("origin"), headers.get("host")
    ):
        raise StarletteHTTPException(403, "cross-site request refused")


router = APIRouter(responses=errors(422, 503))


IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key")]


@router.post(
    "/signups", status_code=202, response_model_exclude_none=True, responses=errors(400, 409)
)
async def create_signup(
    signup: api.SignupIn, service: ServiceDep, idempotency_key: IdempotencyKey = None
) -> api.Accepted:
    """Record a signup and queue its welcome email (and webhook, if one is set up); with an
    `Idempotency-Key`, a repeat gets the first answer."""
    return await run_in_threadpool(service.sign_up, signup, idempotency_key)


UPLOAD = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            }
        },
    }
}


@router.post(
    "/files",
    status_code=202,
    response_model_exclude_none=True,
    openapi_extra=UPLOAD,
    responses=errors(400, 409, 413, 507),
)
async def upload_file(request: Request, service: ServiceDep) -> api.Accepted:
    """Store an uploaded file (the multipart field `file`) and queue its analysis; with an
    `Idempotency-Key`, a repeat gets the first answer."""
    limit = service.settings.max_upload_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + api.MULTIPART_OVERHEAD:
        raise Refused(413, f"the file is larger than the limit of {limit} bytes")
    body = request.stream()

    async def next_chunk() -> bytes:
        try:
            return await anext(body, b"")
        except ClientDisconnect:
            return b""  # the body ends here; it is refused as cut short

    def upload() -> api.Accepted:  # in a thread, which reads the body as it stores the file
        chunks = iter(lambda: from_thread.run(next_chunk), b"")
        form = forms.FilePart(chunks, request.headers.get("content-type", ""), limit)
        key = request.headers.get("Idempotency-Key")
        return service.upload(form, form.filename, form.content_type, key)

    return await run_in_threadpool(upload)


@router.get("/jobs/{job_id}", responses=errors(404))
async def get_job(job_id: str, service: ServiceDep) -> api.JobOut:
    """A job's status, attempts, timings, result and a summary of its last error."""
    return await run_in_threadpool(service.job, job_id)


@router.get(
    "/health",
    response_model=api.Health,
    responses={503: {"model": api.Health, "description": "The database or the broker is down."}},
)
async def health(service: ServiceDep) -> JSONResponse:
    """Whether the database and the broker answer."""
    answer = await run_in_threadpool(service.health)
    return JSONResponse(answer.model_dump(), status_code=200 if answer.status == "ok" else 503)


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(request: Request, service: ServiceDep) -> Response:
    headers = request.headers
    body, content_type = await run_in_threadpool(
        service.metrics, headers.get("accept", ""), headers.get("authorization")
    )
    return Response(body, headers={"Content-Type": content_type})


board = APIRouter(
    dependencies=[Depends(authorize)],
    responses=errors(401, 422, 503),
)


@board.post(
    "/jobs/{job_id}/retry",
    status_code=202,
    response_model_exclude_none=True,
    responses=errors(404, 409),
)
async def retry_job(job_id: str, service: ServiceDep) -> api.Accepted:
    """Queue a failed job again, with a fresh count of attempts."""
    return await run_in_threadpool(service.retry, job_id)


@board.post("/jobs/{job_id}/cancel", responses=errors(404, 409))
async def cancel_job(job_id: str, service: ServiceDep) -> api.JobOut:
    """Cancel a job that has not run, or a file job that runs."""
    return await run_in_threadpool(service.cancel, job_id)


@board.get("/dashboard", include_in_schema=False)
async def overview(service: ServiceDep, kind: str = "", status: str = "") -> HTMLResponse:
    page = await run_in_threadpool(service.overview_page, kind or None, status or None)
    return HTMLResponse(page, headers=dashboard.PAGE_HEADERS)


@board.get("/dashboard/jobs/{job_id}", include_in_schema=False)
async def job_detail(job_id: str, service: ServiceDep) -> HTMLResponse:
    page = await run_in_threadpool(service.job_page, job_id)
    return HTMLResponse(page, headers=dashboard.PAGE_HEADERS)


@board.post("/dashboard/jobs/{job_id}/{action}", include_in_schema=False)
async def act_from_dashboard(job_id: str, action: str, service: ServiceDep) -> Response:
    """The dashboard's buttons: retry or cancel, then back to the job's page."""
    actions = {"retry": service.retry, "cancel": service.cancel}
    if action not in actions:
        raise StarletteHTTPException(404, "Not Found")
    await run_in_threadpool(actions[action], job_id)
    return RedirectResponse(f"/dashboard/jobs/{job_id}", status_code=303)


def error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


async def refused(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Refused)
    return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=exc.headers or None)


async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    if any(problem["type"] == "json_invalid" for problem in exc.errors()):
        return error(400, "the body is not valid JSON")
    return error(422, "invalid request", detail=api.problems(exc.errors(), skip=1))


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    response = error(exc.status_code, str(exc.detail))
    response.headers.update(exc.headers or {})
    return response


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    logs.configure()  # the server's own loggers too: it loads the app after setting them up
    tracing.configure("web")  # FastAPI traces its requests with the provider this sets up

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        queue.close()

    queue = client.Client(settings)
    untraced = TelemetryConfig(exclude=lambda scope: scope["path"] in tracing.UNTRACED_PATHS)
    app = FastAPI(title=settings.app_name, lifespan=lifespan, telemetry=untraced)
    app.state.service = Service(settings, queue)
    app.add_exception_handler(Refused, refused)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.include_router(router)
    if dashboard.Credentials.configured(settings) is not None:
        app.include_router(board)  # without credentials, no dashboard: its paths answer 404
    return app
