"""The HTTP API: sign up, upload a file, follow a job, check health.

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

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import api, database, files, jobs, records, worker
from .records import Job
from .settings import get_settings


def error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def create_app() -> FastAPI:
    settings = get_settings()

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
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(OperationalError)
    async def database_down(request: Request, exc: OperationalError) -> JSONResponse:
        return error(503, api.DATABASE_DOWN)
{%- if cookiecutter.task_queue == "arq" %}

    async def submit(record: Callable[[], Job]) -> JSONResponse:
        """Record a job and hand it to the queue; if the broker is down, take the job back."""
        job = await run_in_threadpool(record)
        try:
            await worker.enqueue(app.state.redis, job)
        except jobs.BrokerUnavailable:
            await run_in_threadpool(jobs.withdraw, job)
            return error(503, api.QUEUE_DOWN)
        return JSONResponse(api.accepted(job), status_code=202)
{%- else %}

    def record_and_publish(record: Callable[[], Job]) -> JSONResponse:
        job = record()
        try:
            worker.enqueue(job)
        except jobs.BrokerUnavailable:
            jobs.withdraw(job)
            return error(503, api.QUEUE_DOWN)
        return JSONResponse(api.accepted(job), status_code=202)

    async def submit(record: Callable[[], Job]) -> JSONResponse:
        """Record a job and hand it to the queue; if the broker is down, take the job back.

        Both block (SQL, then the broker): one trip to the thread pool does the two.
        """
        return await run_in_threadpool(record_and_publish, record)
{%- endif %}

    @app.post("/signups", status_code=202)
    async def create_signup(signup: api.SignupIn) -> JSONResponse:
        return await submit(partial(records.create_signup_job, signup.email, signup.name))

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
        return await submit(partial(jobs.record_upload, stored))

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

    return app


async def _check(probe: Callable[[], Awaitable[None]]) -> str:
    try:
        await probe()
    except Exception as exc:
        return f"unavailable: {type(exc).__name__}: {exc}"
    return "ok"
