"""The ARQ workers, the functions that run each job, and the cleanup schedule.

Short jobs and long ones have their own queue and worker, because ARQ lets a job's lease last as
long as the longest timeout among its worker's functions; a lost email is then retried within
about 30 s however long file processing may take:

    arq {{ cookiecutter.package_name }}.worker.WorkerSettings       # welcome emails, cleanup
    arq {{ cookiecutter.package_name }}.worker.FileWorkerSettings   # uploaded files
"""

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from arq import Retry, cron
from arq.connections import ArqRedis, RedisSettings
from arq.worker import func
from redis.asyncio import ConnectionPool
from redis.asyncio.retry import Retry as RedisRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, RedisError, TimeoutError

from . import cleanup, health, jobs
from .records import Job, JobKind
from .settings import get_settings

settings = get_settings()
QUEUE = "{{ cookiecutter.package_name }}:default"
FILE_QUEUE = "{{ cookiecutter.package_name }}:files"
# Our job records bound real attempts; ARQ's count also includes checks of jobs running elsewhere.
MAX_TRIES = 100


def serialize(value: Any) -> bytes:
    return json.dumps(value, default=repr).encode()  # repr: ARQ also stores exceptions


def deserialize(data: bytes) -> Any:
    return json.loads(data)


def cron_fields(interval: timedelta) -> dict[str, set[int]]:
    """ARQ cron fields that fire every `interval`, which must divide a minute, an hour or a day."""
    seconds = int(interval.total_seconds())
    for unit, field, span, finer in (
        (1, "second", 60, {}),
        (60, "minute", 3600, {"second": {0}}),
        (3600, "hour", 86400, {"minute": {0}, "second": {0}}),
    ):
        if seconds % unit == 0 and span % seconds == 0:
            return {field: set(range(0, span // unit, seconds // unit)), **finer}
    raise ValueError(f"CLEANUP_INTERVAL ({seconds}s) must divide a minute, an hour or a day")


async def _run(job_id: str) -> None:
    try:
        # The work is blocking code (SMTP, files, SQL): it runs in a thread, off the event loop.
        await asyncio.to_thread(jobs.run, job_id)
    except jobs.RetryLater as exc:
        raise Retry(defer=exc.delay) from exc


async def send_welcome_email(ctx: dict[str, Any], job_id: str) -> None:
    await _run(job_id)


async def process_file(ctx: dict[str, Any], job_id: str) -> None:
    await _run(job_id)


async def cleanup_expired(ctx: dict[str, Any]) -> dict[str, int]:
    return await asyncio.to_thread(cleanup.delete_expired)


Hook = Callable[[dict[str, Any]], Awaitable[None]]


def heartbeat(process: str) -> tuple[Hook, Hook]:
    """Start and stop hooks that touch the process kind's heartbeat file (see health.py) while
    this worker's event loop runs and Redis answers it."""
    heartbeat = health.Heartbeat(process)
    interval = settings.worker_heartbeat_interval

    async def beat(redis: ArqRedis) -> None:
        while True:
            try:
                async with asyncio.timeout(interval):
                    await redis.ping()
                heartbeat.beat()
            except (RedisError, OSError, TimeoutError):
                pass  # no heartbeat while Redis is out of reach
            await asyncio.sleep(interval)

    async def on_startup(ctx: dict[str, Any]) -> None:
        ctx["heartbeat"] = asyncio.create_task(beat(ctx["redis"]))

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        if "heartbeat" in ctx:
            ctx["heartbeat"].cancel()
        heartbeat.stop()

    return on_startup, on_shutdown


# Workers wait for Redis to come back rather than exit.
_redis_settings = RedisSettings.from_dsn(settings.broker_url)
_redis_settings.conn_timeout = 3
_redis_settings.retry_on_error = [ConnectionError, TimeoutError]
_redis_settings.retry = RedisRetry(ExponentialBackoff(cap=10, base=0.5), retries=-1)


class WorkerSettings:
    """Welcome emails and the scheduled cleanup: short jobs, retried quickly if a worker dies."""

    redis_settings = _redis_settings
    queue_name = QUEUE
    functions = (func(send_welcome_email, timeout=settings.email_timeout, max_tries=MAX_TRIES),)
    cron_jobs = (
        cron(
            cleanup_expired,
            **cron_fields(settings.cleanup_interval),  # type: ignore[arg-type]
            timeout=settings.cleanup_timeout,
            # One run per tick, however many workers carry the schedule: the tick's job id is
            # refused while its job, or its result, exists. Without a kept result, a worker that
            # reaches the tick after another finished it would run it again.
            unique=True,
            keep_result=settings.cleanup_interval.total_seconds(),
        ),
    )
    job_serializer = serialize
    job_deserializer = deserialize
    keep_result = 0  # outcomes live in the job records
    max_jobs = 10
    on_startup, on_shutdown = heartbeat("worker")


class FileWorkerSettings:
    """Uploaded files: long jobs, with a long lease."""

    redis_settings = _redis_settings
    queue_name = FILE_QUEUE
    functions = (func(process_file, timeout=settings.file_timeout, max_tries=MAX_TRIES),)
    job_serializer = serialize
    job_deserializer = deserialize
    keep_result = 0
    max_jobs = 2
    on_startup, on_shutdown = heartbeat("file_worker")


_FUNCTIONS = {
    JobKind.WELCOME_EMAIL: (send_welcome_email.__name__, QUEUE),
    JobKind.PROCESS_FILE: (process_file.__name__, FILE_QUEUE),
}


def connect() -> ArqRedis:
    """A pool for the web process; it connects on first use and fails fast."""
    pool = ConnectionPool.from_url(settings.broker_url, socket_connect_timeout=3, socket_timeout=5)
    return ArqRedis(pool, job_serializer=serialize, job_deserializer=deserialize)


async def enqueue(redis: ArqRedis, job: Job) -> None:
    """Add the job to its queue, or raise BrokerUnavailable within a few seconds."""
    function, queue = _FUNCTIONS[JobKind(job.kind)]
    try:
        await redis.enqueue_job(function, job.id, _job_id=job.id, _queue_name=queue)
    except (RedisError, OSError) as exc:
        raise jobs.BrokerUnavailable(f"broker unavailable: {exc}") from exc


async def ping(redis: ArqRedis) -> None:
    await redis.ping()
