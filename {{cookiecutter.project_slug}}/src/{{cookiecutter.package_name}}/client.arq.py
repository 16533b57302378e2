"""The queues' side that the web app and the reconciler use (see service.Queue): ARQ's jobs as
they travel through Redis, and a client that publishes them, pings Redis and measures the queues.
"""

import asyncio
import json
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import structlog
from arq.connections import ArqRedis
from redis.asyncio import ConnectionPool
from redis.exceptions import RedisError

from . import jobs
from .models import Job, JobKind
from .settings import Settings, get_settings

logger = structlog.get_logger(__name__)
QUEUE = "{{ cookiecutter.package_name }}:default"
FILE_QUEUE = "{{ cookiecutter.package_name }}:files"
QUEUES = (QUEUE, FILE_QUEUE)
T = TypeVar("T")


def serialize(value: Any) -> bytes:
    return json.dumps(value, default=repr).encode()  # repr: ARQ also stores exceptions


def deserialize(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError as exc:  # ARQ logs this, and drops the job: say what it held
        raise ValueError(f"not a job: {data[:500]!r}") from exc


_FUNCTIONS = {
    JobKind.WELCOME_EMAIL: ("send_welcome_email", QUEUE),
    JobKind.PROCESS_FILE: ("process_file", FILE_QUEUE),
    JobKind.SIGNUP_WEBHOOK: ("send_webhook", QUEUE),
}


def connect(broker_url: str | None = None) -> ArqRedis:
    """A pool that connects on first use and fails fast, unlike the workers' own."""
    url = broker_url or get_settings().broker_url
    pool = ConnectionPool.from_url(url, socket_connect_timeout=3, socket_timeout=5)
    return ArqRedis(pool, job_serializer=serialize, job_deserializer=deserialize)


class Client:
    """The web app's side of the queue (see service.Queue), for any web framework: ARQ's Redis
    pool lives on an event loop of its own, in a thread, and every call waits a bounded time."""

    def __init__(self, app_settings: Settings) -> None:
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="arq-client", daemon=True).start()
        self._redis = connect(app_settings.broker_url)

    def publish(self, job: Job) -> bool:
        return self._call(enqueue(self._redis, job), timeout=10)

    def ping(self) -> None:
        self._call(ping(self._redis), timeout=5)

    def depths(self) -> dict[str, int]:
        return self._call(queue_depths(self._redis), timeout=5)

    def close(self) -> None:
        self._call(self._redis.aclose(), timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)

    def _call(self, coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run `coroutine` on the client's loop; no answer within `timeout` means the broker is
        unavailable, like a refused connection."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError as exc:  # the built-in one, not Redis's: no answer at all
            future.cancel()
            raise jobs.BrokerUnavailable(f"broker unavailable: no answer in {timeout:g}s") from exc


async def enqueue(redis: ArqRedis, job: Job) -> bool:
    """Add the job to its queue, or raise BrokerUnavailable within a few seconds.

    False if the queue holds the job already: ARQ keeps one job per id until it has run.
    """
    function, queue = _FUNCTIONS[JobKind(job.kind)]
    try:
        added = await redis.enqueue_job(function, job.id, _job_id=job.id, _queue_name=queue)
    except (RedisError, OSError) as exc:
        raise jobs.BrokerUnavailable(f"broker unavailable: {exc}") from exc
    if added is None:
        return False
    logger.info("job enqueued", job_id=job.id, kind=job.kind)
    return True


async def ping(redis: ArqRedis) -> None:
    await redis.ping()


async def queue_depths(redis: ArqRedis) -> dict[str, int]:
    """Jobs in each queue that have not finished (waiting, deferred or running: ARQ keeps a job
    in its queue until it ends), or raise BrokerUnavailable."""
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for queue in QUEUES:
                pipe.zcard(queue)
            depths = await pipe.execute()
    except (RedisError, OSError) as exc:
        raise jobs.BrokerUnavailable(f"broker unavailable: {exc}") from exc
    return dict(zip(QUEUES, map(int, depths), strict=True))
