"""The ARQ workers, the functions that run each job, and the schedule.

Short jobs and long ones have their own queue and worker, because ARQ lets a job's lease last as
long as the longest timeout among its worker's functions; a lost email is then retried within
about 30 s however long file processing may take. `WorkerSettings` runs the emails, the webhooks
and the scheduled work, `FileWorkerSettings` the uploaded files:

    arq {{ cookiecutter.package_name }}.worker.WorkerSettings
    arq {{ cookiecutter.package_name }}.worker.FileWorkerSettings
"""

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, cast

import structlog
from arq import Retry, cron
from arq.connections import ArqRedis
from arq.worker import func
from redis.exceptions import RedisError

from . import cleanup, connection, health, jobs, logs, reconcile, tracing
from .client import FILE_QUEUE, QUEUE, connect, deserialize, enqueue, serialize
from .models import Job
from .settings import get_settings

logger = structlog.get_logger(__name__)
settings = get_settings()
# Our job records bound real attempts; ARQ's count also includes checks of jobs running elsewhere.
MAX_TRIES = 100


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


def _threads(ctx: dict[str, Any]) -> ThreadPoolExecutor:
    return cast(ThreadPoolExecutor, ctx["threads"])


async def _run(ctx: dict[str, Any], job_id: str) -> None:
    try:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(_threads(ctx), jobs.run, job_id, ctx["job_try"])
    except jobs.RetryLater as exc:
        raise Retry(defer=exc.delay) from exc


async def send_welcome_email(ctx: dict[str, Any], job_id: str) -> None:
    await _run(ctx, job_id)


async def process_file(ctx: dict[str, Any], job_id: str) -> None:
    await _run(ctx, job_id)


async def send_webhook(ctx: dict[str, Any], job_id: str) -> None:
    await _run(ctx, job_id)


async def cleanup_expired(ctx: dict[str, Any]) -> dict[str, int]:
    return await asyncio.get_running_loop().run_in_executor(_threads(ctx), cleanup.delete_expired)


async def reconcile_jobs(ctx: dict[str, Any]) -> dict[str, int]:
    loop = asyncio.get_running_loop()
    redis = connect()  # fails fast, where the worker's own connection waits for Redis

    def publish(job: Job) -> bool:
        return asyncio.run_coroutine_threadsafe(enqueue(redis, job), loop).result()

    try:
        return await asyncio.to_thread(reconcile.run, publish)
    finally:
        await redis.aclose()


Hook = Callable[[dict[str, Any]], Awaitable[None]]


def lifecycle(process: str, threads: int) -> tuple[Hook, Hook]:
    """Start and stop hooks: our log format; `threads` threads for the work, which is blocking
    code (SMTP, files, SQL) run off the event loop, one thread per job the worker may run at once
    (asyncio's default pool has only cores + 4); and the process kind's heartbeat file (see
    health.py), touched while this worker's event loop runs and Redis answers it."""
    heartbeat = health.Heartbeat(process)
    interval = settings.worker_heartbeat_interval

    async def beat(redis: ArqRedis) -> None:
        while True:
            try:
                async with asyncio.timeout(interval):
                    await redis.ping()
                heartbeat.beat()
            except (RedisError, OSError):  # OSError: also asyncio's TimeoutError
                pass  # no heartbeat while Redis is out of reach
            await asyncio.sleep(interval)

    async def on_startup(ctx: dict[str, Any]) -> None:
        logs.configure()  # after the `arq` command's own logging setup, which this replaces
        tracing.configure("worker")
        ctx["threads"] = ThreadPoolExecutor(threads, thread_name_prefix="job")
        ctx["heartbeat"] = asyncio.create_task(beat(ctx["redis"]))

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        if "heartbeat" in ctx:
            ctx["heartbeat"].cancel()
        heartbeat.stop()
        ctx["threads"].shutdown(wait=False)

    return on_startup, on_shutdown


class WorkerSettings:
    """Emails, webhooks and the scheduled work: short jobs, retried quickly if a worker dies."""

    redis_settings = connection.redis_settings  # retried while Redis is away
    # On SIGTERM: take no new jobs, let running ones finish, then hand back what still runs.
    job_completion_wait = settings.shutdown_wait
    queue_name = QUEUE
    functions = (
        # A few seconds past the job's own deadline, which ends the call and records the attempt.
        func(send_welcome_email, timeout=settings.email_timeout + 5, max_tries=MAX_TRIES),
        func(send_webhook, timeout=settings.webhook_timeout + 5, max_tries=MAX_TRIES),
    )
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
        cron(
            reconcile_jobs,
            **cron_fields(reconcile.every()),  # type: ignore[arg-type]
            timeout=settings.cleanup_timeout,
            unique=True,
        ),
    )
    job_serializer = serialize
    job_deserializer = deserialize
    keep_result = 0  # outcomes live in the job records
    # ARQ looks for new jobs every poll_delay (0.5 s by default), which delays every job and
    # caps a worker at max_jobs per poll. Every 20 ms costs Redis one ZRANGEBYSCORE per poll:
    # 50 commands/s per idle worker, a few µs of its time each.
    poll_delay = 0.02
    max_jobs = 16  # emails wait on SMTP and the database: many at once, each in its own thread
    on_startup, on_shutdown = lifecycle("worker", threads=max_jobs)


class FileWorkerSettings:
    """Uploaded files: long jobs, with a long lease."""

    redis_settings = connection.redis_settings  # retried while Redis is away
    job_completion_wait = settings.shutdown_wait
    queue_name = FILE_QUEUE
    functions = (func(process_file, timeout=settings.file_timeout, max_tries=MAX_TRIES),)
    job_serializer = serialize
    job_deserializer = deserialize
    keep_result = 0
    poll_delay = 0.1  # a file takes far longer to analyse than this to be picked up
    max_jobs = 2  # CPU-bound: more at once only share the same cores
    on_startup, on_shutdown = lifecycle("file_worker", threads=max_jobs)
