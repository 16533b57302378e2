"""ARQ workers for the tests: in a thread of this process, or real worker processes."""

import asyncio
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from fakeredis import TcpFakeServer

from tests.processes import free_port


def _fake_redis_url() -> str:
    """An in-memory Redis that speaks the real protocol, so worker processes can reach it too."""
    port = free_port()
    server = TcpFakeServer(("127.0.0.1", port), server_type="redis")
    server.daemon_threads = True  # open client connections must not keep the tests from exiting
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"redis://127.0.0.1:{port}/0"


TEST_BROKER_URL = os.environ.get("TEST_BROKER_URL")
os.environ["BROKER_URL"] = TEST_BROKER_URL or _fake_redis_url()
# fakeredis lacks INFO, which the `arq` command needs at start: worker processes need real Redis.
CROSS_PROCESS = TEST_BROKER_URL is not None
UNREACHABLE_BROKER_URL = "redis://127.0.0.1:9/0"

import arq.worker  # noqa: E402
from arq.cron import CronJob, next_cron  # noqa: E402
from arq.worker import Worker  # noqa: E402

from {{ cookiecutter.package_name }} import client  # noqa: E402
from {{ cookiecutter.package_name }} import worker as queue  # noqa: E402

SETTINGS = (queue.WorkerSettings, queue.FileWorkerSettings)
T = TypeVar("T")


class ThreadWorker:
    """Real ARQ workers, one per queue, running on an event loop in a thread of the test process."""

    def start(self) -> None:
        if not CROSS_PROCESS:
            arq.worker.log_redis_info = _no_redis_info  # type: ignore[attr-defined]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._workers = self._call(self._create())
        loop = self._loop
        self._mains = [asyncio.run_coroutine_threadsafe(w.main(), loop) for w in self._workers]
        time.sleep(0.2)
        for main in self._mains:
            if main.done():
                main.result()  # raises what stopped the worker

    def stop(self) -> None:
        for main in self._mains:
            main.cancel()
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    async def _create(self) -> list[Worker]:
        return [Worker(**_options(s), handle_signals=False) for s in SETTINGS]

    async def _close(self) -> None:
        for worker in self._workers:
            # A job whose record is final may still be writing ARQ's own keys: let it finish, as
            # close() cancels whatever still runs.
            running = [task for task in worker.tasks.values() if not task.done()]
            if running:
                await asyncio.wait(running, timeout=10)
            await worker.close()

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(30)


def _options(settings: type) -> dict[str, Any]:
    return {name: value for name, value in vars(settings).items() if not name.startswith("_")}


async def _no_redis_info(redis: Any, log_func: Any) -> None:
    """ARQ logs the server's INFO at start; fakeredis does not implement that command."""


async def _purge() -> None:
    redis = client.connect()
    try:
        keys = [key async for key in redis.scan_iter("arq:*")]
        await redis.delete(client.QUEUE, client.FILE_QUEUE, *keys)
    finally:
        await redis.aclose()


def purge() -> None:
    asyncio.run(_purge())


# A job id whose job cannot be decoded, and one whose job does not exist; what the worker's log
# must say of them.
_GARBLED = b"\x80 garbled"
POISON_LOGGED = (repr(_GARBLED), "poison-missing")


async def _push_poison() -> None:
    redis = client.connect()
    try:
        await redis.set("arq:job:poison-garbled", _GARBLED)
        await redis.zadd(client.QUEUE, {"poison-garbled": 1, "poison-missing": 1})
    finally:
        await redis.aclose()


def push_poison() -> None:
    """Messages no worker can run, at the head of the queue of the `worker` process."""
    asyncio.run(_push_poison())


def start_process() -> subprocess.Popen[bytes]:
    """A worker process for short jobs, started as the Procfile starts it."""
    arq = Path(sys.executable).with_name("arq")
    return subprocess.Popen([str(arq), f"{queue.__name__}.WorkerSettings"], start_new_session=True)


async def _enqueue_cleanup() -> None:
    redis = client.connect()
    try:
        cleanup = _cron_job(queue.cleanup_expired)
        await redis.enqueue_job(cleanup.name, _queue_name=client.QUEUE)
    finally:
        await redis.aclose()


def _cron_job(function: Any) -> CronJob:
    return next(job for job in queue.WorkerSettings.cron_jobs if job.coroutine is function)


def trigger_cleanup() -> None:
    asyncio.run(_enqueue_cleanup())


def reconcile_now() -> dict[str, int]:
    """Run the reconciler here, as the schedule runs it in a worker."""
    return asyncio.run(queue.reconcile_jobs({}))


def cleanup_every_seconds() -> float:
    return _every_seconds(_cron_job(queue.cleanup_expired))


def reconcile_every_seconds() -> float:
    return _every_seconds(_cron_job(queue.reconcile_jobs))


def _every_seconds(job: CronJob) -> float:
    """The time between two runs that a cron schedule gives."""
    names = ("month", "day", "weekday", "hour", "minute", "second")
    fields = {name: getattr(job, name) for name in names}
    first = next_cron(datetime(2026, 1, 1, tzinfo=UTC), **fields, microsecond=0)
    return (next_cron(first, **fields, microsecond=0) - first).total_seconds()


# The Procfile processes that take part in the queue (not web).
WORKER_PROCESSES = ("worker", "file_worker")

# The Procfile processes that run the schedule besides the workers: none, each worker carries it.
SCHEDULE_PROCESSES: tuple[str, ...] = ()


def cleanup_runs(log: str) -> list[tuple[float, str]]:
    """When each cleanup that a worker process's log shows it ran ended (to the second: ARQ
    logs the time of day, and no id for cron jobs)."""
    cleanup = _cron_job(queue.cleanup_expired)
    # The time of day at the start of the line, whatever the log format.
    pattern = rf"^\S*?(\d\d:\d\d:\d\d)\S* .* ← {re.escape(cleanup.name)} "
    today = datetime.now().strftime("%Y-%m-%d")
    return [
        (datetime.strptime(f"{today} {when}", "%Y-%m-%d %H:%M:%S").timestamp(), "")
        for when in re.findall(pattern, log, re.MULTILINE)
    ]
