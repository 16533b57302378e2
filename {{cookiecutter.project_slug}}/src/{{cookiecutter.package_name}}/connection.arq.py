"""How ARQ's workers keep to Redis: every command and new connection retried with backoff while
Redis is away, a lost connection logged rather than fatal, and SIGTERM obeyed whatever Redis does.
The `arq` command then runs this module's `Worker`.
"""

import asyncio
from collections.abc import Awaitable, Callable
from signal import Signals
from typing import Any, TypeVar

import arq.worker
import structlog
from arq.connections import RedisSettings
from redis.asyncio.retry import Retry as RedisRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, WatchError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .settings import get_settings

logger = structlog.get_logger(__name__)
T = TypeVar("T")


# What redis-py raises when it cannot reach Redis (a refused connection raises OSError).
CONNECTION_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)


class _LoggedRetry(RedisRetry):
    """Redis's retry with backoff, which also says in the logs that Redis cannot be reached, and
    which gives up once the worker is told to stop, so that it stops whether Redis is there or
    not. (redis-py copies the retry for each connection: the flag belongs to the class.)"""

    stopping = False

    async def call_with_retry(
        self, do: Callable[[], Awaitable[T]], fail: Callable[[RedisError], Any]
    ) -> T:
        async def failed(error: RedisError) -> None:
            if _LoggedRetry.stopping:
                raise error
            logger.warning("redis unavailable, retrying", error=str(error))
            await fail(error)

        return await super().call_with_retry(do, failed)


# Workers wait for Redis to come back rather than exit: every command, and every new connection,
# is retried with backoff (at most 10 s apart) for as long as Redis is away.
redis_settings = RedisSettings.from_dsn(get_settings().broker_url)
redis_settings.conn_timeout = 3
redis_settings.retry_on_error = list(CONNECTION_ERRORS)
redis_settings.retry = _LoggedRetry(ExponentialBackoff(cap=10, base=0.5), retries=-1)


def lost_connection(error: BaseException) -> bool:
    """Whether Redis was out of reach, including a transaction's WATCH that a lost connection
    broke (redis-py raises WatchError while handling the ConnectionError then, and does not
    retry)."""
    if isinstance(error, WatchError):
        return isinstance(error.__context__, CONNECTION_ERRORS)
    return isinstance(error, CONNECTION_ERRORS)


class Worker(arq.worker.Worker):
    """ARQ's worker, which rides out losing Redis and stops on SIGTERM whatever Redis does.

    ARQ's own ends at the first error its polling loop meets; commands are retried until Redis
    answers, but a transaction whose connection dropped is not (it raises WatchError). This one
    logs it and polls again. On SIGTERM (or SIGINT) it stops retrying: the running jobs have
    SHUTDOWN_WAIT to finish, and those that cannot reach Redis fail, to run again elsewhere.
    """

    async def _poll_iteration(self) -> None:
        try:
            await super()._poll_iteration()
        except Exception as exc:
            if not lost_connection(exc):
                raise
            logger.warning("redis unavailable, polling again", error=repr(exc))
            await asyncio.sleep(1)

    def handle_sig_wait_for_completion(self, signum: Signals) -> None:
        _LoggedRetry.stopping = True
        super().handle_sig_wait_for_completion(signum)

    async def close(self) -> None:
        try:
            await super().close()
        except Exception as exc:
            if not lost_connection(exc):
                raise
            # ARQ's close() deletes its health key before the shutdown hook: run that anyway.
            logger.warning("redis unavailable while stopping", error=repr(exc))
            if self.on_shutdown is not None:
                await self.on_shutdown(self.ctx)


# The `arq` command runs its settings with arq.worker.Worker: make that this one.
arq.worker.Worker = Worker  # type: ignore[misc]
