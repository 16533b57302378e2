"""The HTTP API: sign up, upload a file, follow a job, check health; metrics and the dashboard.

Serve it with `uvicorn --factory {{ cookiecutter.package_name }}.web:create_app`; uvicorn runs
`WEB_CONCURRENCY` processes of it.
"""

{% if cookiecutter.task_queue == "arq" -%}
import asyncio
{% endif -%}
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy.exc import OperationalError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import api, dashboard, database, files, jobs, logs, metrics, records, worker
from .records import Job
from .settings import Settings, get_settings


def error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    logs.configure()  # the server's own loggers too: it loads the app after setting them up

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
{%- if cookiecutter.task_queue == "arq" %}
        app.state.redis = worker.connect()  # one pool per process, for its whole life
        yield
        await app.state.redis.aclose()
{%- else %}
        yield
{%- endif %}

    app = FastAPI(title="{{ cookiecutter.project_name }}", lifespan=lifespan)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        if any(problem["type"] == "json_invalid" for problem in exc.errors()):
            return error(400, "the body is not valid JSON")
        return error(422, "invalid request", detail=api.problems(exc.errors(), skip=1))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        response = error(exc.status_code, str(exc.detail))
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(dashboard.BadRequest)
    async def bad_request(request: Request, exc: dashboard.BadRequest) -> JSONResponse:
        return error(exc.status, str(exc))

    @app.exception_handler(OperationalError)
    async def database_down(request: Request, exc: OperationalError) -> JSONResponse:
        return error(503, api.DATABASE_DOWN)
{%- if cookiecutter.task_queue == "arq" %}

    async def publish(job: Job) -> None:
        """Hand a recorded job to the queue, or raise jobs.BrokerUnavailable."""
        await worker.enqueue(app.state.redis, job)

    async def submit(record: Callable[[], list[Job]]) -> JSONResponse:
        """Record jobs and hand them to the queue; if the broker is down, take them all back."""
        recorded = await run_in_threadpool(record)
        try:
            for job in recorded:
                await publish(job)
        except jobs.BrokerUnavailable:
            await run_in_threadpool(jobs.withdraw, *recorded)
            return error(503, api.QUEUE_DOWN)
        return JSONResponse(api.accepted(*recorded), status_code=202)
{%- else %}

    async def publish(job: Job) -> None:
        """Hand a recorded job to the queue, or raise jobs.BrokerUnavailable."""
        await run_in_threadpool(worker.enqueue, job)

    def record_and_publish(record: Callable[[], list[Job]]) -> JSONResponse:
        recorded = record()
        try:
            for job in recorded:
                worker.enqueue(job)
        except jobs.BrokerUnavailable:
            jobs.withdraw(*recorded)
            return error(503, api.QUEUE_DOWN)
        return JSONResponse(api.accepted(*recorded), status_code=202)

    async def submit(record: Callable[[], list[Job]]) -> JSONResponse:
        """Record jobs and hand them to the queue; if the broker is down, take them all back.

        Both block (SQL, then the broker): one trip to the thread pool does the two.
        """
        return await run_in_threadpool(record_and_publish, record)
{%- endif %}

    @app.post("/signups", status_code=202)
    async def create_signup(signup: api.SignupIn) -> JSONResponse:
        return await submit(partial(jobs.record_signup, signup.email, signup.name))

    @app.post("/files", status_code=202)
    async def upload_file(request: Request) -> JSONResponse:
        limit = settings.max_upload_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit + api.MULTIPART_OVERHEAD:
            return error(413, f"the file is larger than the limit of {limit} bytes")
        async with request.form(max_files=1, max_fields=10) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                return error(422, "send the file as the multipart form field 'file'")
            try:
                stored = await run_in_threadpool(
                    files.store,
                    upload.file,
                    upload.filename or "",
                    upload.content_type or "application/octet-stream",
                    limit,
                )
            except files.UploadTooLarge as exc:
                return error(413, str(exc))
        return await submit(lambda: [jobs.record_upload(stored)])

    @app.get("/jobs/{job_id}")
    async def get_job(job_id: str) -> JSONResponse:
        job = await run_in_threadpool(records.get_job, job_id) if api.is_job_id(job_id) else None
        if job is None:
            return error(404, f"no job with id {job_id!r}")
        return JSONResponse(job.to_dict())

    @app.get("/health")
    async def health() -> JSONResponse:
        checks = {
            "database": await _check(lambda: run_in_threadpool(database.ping)),
{%- if cookiecutter.task_queue == "arq" %}
            "broker": await _check(lambda: asyncio.wait_for(worker.ping(app.state.redis), 5)),
{%- else %}
            "broker": await _check(lambda: run_in_threadpool(worker.ping)),
{%- endif %}
        }
        healthy = all(result == "ok" for result in checks.values())
        body = {"status": "ok" if healthy else "unavailable", "checks": checks}
        return JSONResponse(body, status_code=200 if healthy else 503)

    async def queue_depths() -> dict[str, int] | None:
        """Messages in each queue, or None if the broker does not answer."""
        try:
{%- if cookiecutter.task_queue == "arq" %}
            return await asyncio.wait_for(worker.queue_depths(app.state.redis), 5)
        except (jobs.BrokerUnavailable, TimeoutError):
{%- else %}
            return await run_in_threadpool(worker.queue_depths)
        except jobs.BrokerUnavailable:
{%- endif %}
            return None

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics(request: Request) -> Response:
        accept = request.headers.get("accept", "")
        body, content_type = await run_in_threadpool(
            metrics.exposition, await queue_depths(), accept
        )
        return Response(body, headers={"Content-Type": content_type})

    credentials = dashboard.Credentials.configured(settings)
    if credentials is None:
        return app  # no dashboard without credentials: its paths answer 404

    def authorize(request: Request) -> None:
        if not credentials.accept(request.headers.get("authorization")):
            raise StarletteHTTPException(401, "credentials required", headers=dashboard.CHALLENGE)
        headers = request.headers
        if request.method == "POST" and dashboard.cross_site(
            headers.get("sec-fetch-site"), headers.get("origin"), headers.get("host")
        ):
            raise StarletteHTTPException(403, "cross-site request refused")

    board = APIRouter(dependencies=[Depends(authorize)])

    async def retry(job_id: str) -> JSONResponse:
        """Queue a failed job again; if the broker is down, it stays failed."""
        job = await run_in_threadpool(dashboard.reopen, job_id)
        try:
            await publish(job)
        except jobs.BrokerUnavailable:
            await run_in_threadpool(records.restore, job)
            return error(503, dashboard.QUEUE_DOWN)
        return JSONResponse(dashboard.requeued(job), status_code=202)

    @board.post("/jobs/{job_id}/retry", status_code=202)
    async def retry_job(job_id: str) -> JSONResponse:
        return await retry(job_id)

    @board.get("/dashboard", include_in_schema=False)
    async def overview(kind: str = "", status: str = "") -> HTMLResponse:
        depths = await queue_depths()
        page = await run_in_threadpool(dashboard.overview_page, settings, kind, status, depths)
        return HTMLResponse(page, headers=dashboard.PAGE_HEADERS)

    @board.get("/dashboard/jobs/{job_id}", include_in_schema=False)
    async def job_detail(job_id: str) -> HTMLResponse:
        page = await run_in_threadpool(dashboard.job_page, settings, job_id)
        return HTMLResponse(page, headers=dashboard.PAGE_HEADERS)

    @board.post("/dashboard/jobs/{job_id}/retry", include_in_schema=False)
    async def retry_from_dashboard(job_id: str) -> Response:
        response = await retry(job_id)
        if response.status_code != 202:
            return response
        return RedirectResponse(f"/dashboard/jobs/{job_id}", status_code=303)

    app.include_router(board)
    return app


async def _check(probe: Callable[[], Awaitable[None]]) -> str:
    try:
        await probe()
    except Exception as exc:
        return f"unavailable: {type(exc).__name__}: {exc}"
    return "ok"
