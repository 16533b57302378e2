"""PostgreSQL goes away for a while, or has too few connections for everyone: jobs wait, none
fails for it, none runs twice, no process exits.

The Procfile's web process and workers reach the database through a proxy the test owns, which
drops every connection and refuses new ones for OUTAGE_SECONDS in the middle of a burst; or they
share a PostgreSQL server of the test's own that has fewer connections than they may open.
"""

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import make_url, select

from {{ cookiecutter.package_name }} import database
from {{ cookiecutter.package_name }}.models import FINISHED, Job, JobStatus
from {{ cookiecutter.package_name }}.settings import Settings

from tests import postgres_server, workers
from tests.conftest import TEST_ENV, Mailbox, stored_files
from tests.processes import PROJECT_ROOT, start_procfile, wait_until, web_process
from tests.proxy import Proxy
from tests.test_reliability import call, post_file, post_json
from tests.test_scale import Process

pytestmark = [
    pytest.mark.drill,
    pytest.mark.skipif(not workers.CROSS_PROCESS, reason="needs TEST_BROKER_URL"),
]
BURST = 30
OUTAGE_SECONDS = 15
# The drill's lease: held outcomes and leases ride out an outage shorter than 5/6 of it (25 s);
# and time for an email that the SMTP server takes its time to accept.
TIMING = {"JOB_LEASE": "30", "STUCK_JOB_AFTER": "60", "SMTP_TIMEOUT": "10", "EMAIL_TIMEOUT": "10"}


@contextmanager
def email_workers(database_url: str, tmp_path: Path, count: int) -> Iterator[list[Process]]:
    """`count` of the Procfile's email workers on this database, once ready."""
    with ExitStack() as stack:
        started = []
        for n in range(count):
            process = Process(f"worker-{n}", tmp_path)
            process.env |= TIMING | {"DATABASE_URL": database_url}
            process.start("worker", tmp_path)
            stack.callback(stop_process, process)
            started.append(process)
        deadline = time.monotonic() + 60
        for process in started:
            while not process.alive():
                assert process.popen.poll() is None, process.output()
                assert time.monotonic() < deadline, f"{process.name} never became ready"
                time.sleep(0.2)
        yield started


def stop_process(process: Process) -> None:
    if process.popen.poll() is None:
        process.popen.terminate()
    process.popen.wait(timeout=30)


def assert_running(processes: list[Process]) -> None:
    exited = [p.name for p in processes if p.popen.poll() is not None]
    assert not exited, f"exited: {exited}"


def unfinished(settings: Settings, accepted: dict[str, str], processes: list[Process]) -> str:
    """Why a drill's jobs did not all finish: each unfinished job, and the workers' last lines."""
    with database.session(database.engine(settings)) as db:
        jobs = db.scalars(select(Job).where(Job.id.in_(accepted.values()))).all()
    waiting = [
        f"{job.id} {job.status} attempts={job.attempts} fence={job.fence} error={job.error!r}"
        for job in jobs
        if job.status not in FINISHED
    ]
    logs = "\n".join(
        f"--- {p.name} (exit {p.popen.poll()}):\n" + "\n".join(p.output().splitlines()[-40:])
        for p in processes
    )
    return (
        f"not every job finished: {len(waiting)} of {len(accepted)}\n"
        + "\n".join(waiting)
        + f"\n{logs}"
    )


def finished(settings: Settings, job_ids: list[str]) -> list[Job]:
    with database.session(database.engine(settings)) as db:
        jobs = db.scalars(select(Job).where(Job.id.in_(job_ids))).all()
    return [job for job in jobs if job.status in FINISHED]


def running(settings: Settings, job_ids: list[str]) -> int:
    with database.session(database.engine(settings)) as db:
        query = select(Job.id).where(Job.id.in_(job_ids), Job.status == JobStatus.RUNNING)
        return len(db.scalars(query).all())


def sign_up(base: str) -> tuple[int, str, str]:
    """Post a signup: the answer's status, the address, and the job's id if it was accepted."""
    address = f"db-{uuid.uuid4().hex[:8]}@example.com"
    status, body = post_json(f"{base}/signups", {"email": address, "name": "Ada"})
    return status, address, body.get("job_id", "")


def accept(base: str, count: int) -> dict[str, str]:
    """Sign up `count` addresses; the job id of each."""
    accepted = {}
    for _ in range(count):
        status, address, job_id = sign_up(base)
        assert status == 202, status
        accepted[address] = job_id
    return accepted


def test_a_database_outage_mid_burst_delays_jobs_and_repeats_none(
    migrated_database: None, mailbox: Mailbox, without_thread_worker: None, tmp_path: Path
) -> None:
    url = make_url(TEST_ENV["DATABASE_URL"])
    mailbox.delay = 3.0  # the first jobs are still at the SMTP server when the cut comes
    with (
        Proxy(url.host or "127.0.0.1", url.port or 5432) as proxy,
        email_workers(
            proxied := url.set(port=proxy.port).render_as_string(False), tmp_path, 2
        ) as processes,
        web_process(**TIMING, DATABASE_URL=proxied) as base,
    ):
        accepted = accept(base, BURST // 2)
        settings = Settings(database_url=TEST_ENV["DATABASE_URL"])  # past the proxy
        wait_until(  # a worker's first claim opens its first connection: slow on a busy machine
            lambda: running(settings, list(accepted.values())) > 0,
            "no job reached the SMTP server",
            30,
        )
        proxy.cut()
        cut_at = time.monotonic()

        # The web process refuses new work at once, keeps nothing, and says why.
        rows, files = count_jobs(), stored_files()
        started = time.monotonic()
        assert sign_up(base)[0] == 503
        assert post_file(f"{base}/files", "a.csv", b"a,b\n1,2\n")[0] == 503
        assert time.monotonic() - started < 10
        assert (count_jobs(), stored_files()) == (rows, files)
        assert call(f"{base}/health")[0] == 503
        while time.monotonic() - cut_at < OUTAGE_SECONDS:
            assert_running(processes)
            time.sleep(0.5)

        proxy.restore()
        restored_at = time.monotonic()
        wait_until(lambda: call(f"{base}/health")[0] == 200, "/health did not recover", 30)
        accepted |= accept(base, BURST - len(accepted))
        wait_until(
            lambda: len(finished(settings, list(accepted.values()))) == BURST,
            "not every job finished after the outage",
            60,
        )
        assert_running(processes)
        jobs = finished(settings, list(accepted.values()))
        assert {job.status for job in jobs} == {"succeeded"}, [(j.id, j.error) for j in jobs]
        assert [len(mailbox.to(address)) for address in accepted] == [1] * BURST
        held = sum(p.output().count("outcome written after the database came") for p in processes)
        assert held, "no outcome was held through the outage: the drill proves nothing"
        print(
            f"all {BURST} jobs done {time.monotonic() - restored_at:.1f}s after a "
            f"{OUTAGE_SECONDS}s outage; {held} outcomes held through it; attempts "
            f"{sorted(job.attempts for job in jobs)}"
        )


def count_jobs() -> int:
    with database.session() as db:
        return len(db.scalars(select(Job.id)).all())


def every_connection_left(url: str) -> list[psycopg.Connection[Any]]:
    """Connections to a server until it refuses one, to hold."""
    held: list[psycopg.Connection[Any]] = []
    while len(held) < 100:
        try:
            held.append(psycopg.connect(url, autocommit=True))
        except psycopg.OperationalError:
            return held
    raise AssertionError("the server took 100 connections")


def release(held: list[psycopg.Connection[Any]]) -> None:
    for connection in held:
        connection.close()


def refusals(processes: list[Process]) -> int:
    return sum(p.output().count("too many clients") for p in processes)


def test_too_few_connections_make_jobs_wait_and_none_fails(
    mailbox: Mailbox, without_thread_worker: None, tmp_path: Path
) -> None:
    # Three email workers and the web process may open DATABASE_POOL_SIZE (5) connections each,
    # 20 in all; this server takes 10, so some of theirs are refused ("too many clients").
    with postgres_server.running(max_connections="10", superuser_reserved_connections="0") as url:
        migration = start_procfile("release", os.environ | {"DATABASE_URL": url}, PROJECT_ROOT)
        assert migration.wait(60) == 0
        settings = Settings(database_url=url, database_pool_size=1)
        finished(settings, [])  # the test's own connection, taken first
        with web_process(**TIMING, DATABASE_URL=url) as base:
            accepted = accept(base, BURST)  # queued, to be taken by all the workers at once
            # The workers start on a full server, so that their first claims are refused for
            # certain; then they share what it has.
            held = every_connection_left(url)
            try:
                with email_workers(url, tmp_path, 3) as processes:
                    wait_until(lambda: refusals(processes) > 0, "no worker was refused", 60)
                    release(held)
                    wait_until(  # jobs wait for connections: slow on a busy machine, never lost
                        lambda: len(finished(settings, list(accepted.values()))) == BURST,
                        lambda: unfinished(settings, accepted, processes),
                        150,
                    )
                    assert_running(processes)
            finally:
                release(held)
        jobs = finished(settings, list(accepted.values()))
        assert {job.status for job in jobs} == {"succeeded"}, [(j.id, j.error) for j in jobs]
        assert [job.attempts for job in jobs] == [1] * BURST, [(j.id, j.attempts) for j in jobs]
        assert [len(mailbox.to(address)) for address in accepted] == [1] * BURST
        refused = refusals(processes)
        print(f"{BURST} jobs done, each once at its first attempt; {refused} refused connections")
