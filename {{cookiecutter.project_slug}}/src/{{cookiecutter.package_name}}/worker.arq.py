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
from typing import Any, TypeVar

import structlog
from arq import Retry, cron
from arq.connections import ArqRedis, RedisSettings
from arq.worker import func
from redis.asyncio import ConnectionPool
from redis.asyncio.retry import Retry as RedisRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, RedisError, TimeoutError

from . import cleanup, jobs, logs
from .records import Job, JobKind
from .settings import get_settings

logger = structlog.get_logger(__name__)
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


async def startup(ctx: dict[str, Any]) -> None:
    logs.configure()  # after the `arq` command's own logging setup, which this replaces


T = TypeVar("T")


class _LoggedRetry(RedisRetry):
    """Redis's retry with backoff, which also says in the logs that Redis cannot be reached."""

    async def call_with_retry(
        self, do: Callable[[], Awaitable[T]], fail: Callable[[RedisError], Any]
    ) -> T:
        async def failed(error: RedisError) -> None:
            logger.warning("redis unavailable, retrying", error=str(error))
            await fail(error)

        return await super().call_with_retry(do, failed)


# Workers wait for Redis to come back rather than exit: every command, and every new connection
# (refused ones raise OSError), is retried with backoff for as long as Redis is away.
_redis_settings = RedisSettings.from_dsn(settings.broker_url)
_redis_settings.conn_timeout = 3
_redis_settings.retry_on_error = [ConnectionError, TimeoutError, OSError]
_redis_settings.retry = _LoggedRetry(ExponentialBackoff(cap=10, base=0.5), retries=-1)


class WorkerSettings:
    """Welcome emails and the scheduled cleanup: short jobs, retried quickly if a worker dies."""

    redis_settings = _redis_settings
    on_startup = startup
    # On SIGTERM: take no new jobs, let running ones finish, then hand back what still runs.
    job_completion_wait = settings.shutdown_wait
    queue_name = QUEUE
    functions = (func(send_welcome_email, timeout=settings.email_timeout, max_tries=MAX_TRIES),)
    cron_jobs = (
        cron(
            cleanup_expired,
            **cron_fields(settings.cleanup_interval),  # type: ignore[arg-type]
            timeout=settings.cleanup_timeout,
            unique=True,  # one run per tick, however many workers run
        ),
    )
    job_serializer = serialize
    job_deserializer = deserialize
    keep_result = 0  # outcomes live in the job records
    max_jobs = 10


class FileWorkerSettings:
    """Uploaded files: long jobs, with a long lease."""

    redis_settings = _redis_settings
    on_startup = startup
    job_completion_wait = settings.shutdown_wait
    queue_name = FILE_QUEUE
    functions = (func(process_file, timeout=settings.file_timeout, max_tries=MAX_TRIES),)
    job_serializer = serialize
    job_deserializer = deserialize
    keep_result = 0
    max_jobs = 2


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
    logger.info("job enqueued", job_id=job.id, kind=job.kind)


async def ping(redis: ArqRedis) -> None:
    await redis.ping()
