"""Keep a run's claim alive while its work runs, and its outcome safe while the database is away.

Every JOB_LEASE / 6 one thread per process renews the lease of each run the process has under
way, so an email or a webhook that takes long, or never reports progress, keeps its job: only a
dead or hung worker loses it. An outcome that cannot be written because the database does not
answer is held and written again until it answers, for up to JOB_LEASE: the job's effect (an
email accepted by the server) is not forgotten, so a database outage shorter than the lease
minus one renewal interval (75 s at the defaults) never runs a job twice.
"""

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import structlog
from sqlalchemy import Connection
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from . import database, runs
from .runs import Run
from .settings import get_settings

logger = structlog.get_logger(__name__)

# The database is down, refuses connections, or this process has used up its connections.
DATABASE_UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeoutError)


class Keeper:
    """Renews the leases of this process's runs, from one thread that starts with the first."""

    def __init__(self) -> None:
        self._runs: set[Run] = set()
        self._lock = threading.Lock()
        self._pid = 0

    @contextmanager
    def keep(self, run: Run) -> Iterator[None]:
        with self._lock:
            self._runs.add(run)
            if self._pid != os.getpid():  # the first run here, or in a forked child
                self._pid = os.getpid()
                threading.Thread(target=self._renew, name="leases", daemon=True).start()
        try:
            yield
        finally:
            with self._lock:
                self._runs.discard(run)

    def _renew(self) -> None:
        interval = get_settings().job_lease.total_seconds() / 6
        while True:
            time.sleep(interval)
            with self._lock:
                under_way = list(self._runs)
            for run in under_way:
                try:
                    with database.transaction() as db:
                        runs.renew(db, run)
                except DATABASE_UNAVAILABLE as exc:
                    logger.warning("lease not renewed", job_id=run.job_id, error=str(exc))


keeper = Keeper()


def record(run: Run, write: Callable[[Connection], bool]) -> bool:
    """Write a run's outcome, holding it while the database does not answer, up to JOB_LEASE.

    True once written; False if the run is no longer the job's current one (then nothing was
    written) or the database did not answer in time.
    """
    log = logger.bind(job_id=run.job_id, kind=run.kind, attempt=run.attempt)
    deadline = time.monotonic() + get_settings().job_lease.total_seconds()
    wait, held = 0.25, False
    while True:
        try:
            with database.transaction() as db:
                current = write(db)
            break
        except DATABASE_UNAVAILABLE as exc:
            if time.monotonic() + wait > deadline:
                log.error("job outcome lost: the database did not answer in time", error=str(exc))
                return False
            if not held:
                log.warning("job outcome held until the database answers", error=str(exc))
                held = True
            time.sleep(wait)
            wait = min(wait * 2, 5.0)
    if held:
        log.info("job outcome written after the database came back")
    if not current:
        log.warning("job outcome refused: this run is no longer the job's current one")
    return current
