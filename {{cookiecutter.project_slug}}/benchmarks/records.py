"""How long the readers and the maintenance of the job records take over many records.

    uv run python benchmarks/records.py N    # e.g. 1000000

It fills the database with N job records in bulk, a week of them as a busy deployment keeps
(97 % succeeded, the rest failed, queued, retrying or running; mostly welcome emails, some
webhooks and files), then times, in this process, what reads or maintains them: `GET /metrics`
(with a metrics token, its cache off), `GET /dashboard` and its filters (through the web app,
with the dashboard's credentials), one run of the reconciler (its publish does nothing; half the
unfinished records are overdue, so it publishes them again until its time limit), one run when
none is stuck, and one batch of the cleanup (a day later, so that the oldest day's records have
expired).

DATABASE_URL says which database (a new SQLite file by default): give it one of its own, since
every job record and signup in it is deleted first. BROKER_URL is the broker whose queue depths
`/metrics` and the dashboard read.
"""

import argparse
import base64
import functools
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

{% if cookiecutter.web_framework == "fastapi" -%}
from fastapi.testclient import TestClient
{% endif -%}
from sqlalchemy import delete, func, select, update

ROOT = Path(__file__).resolve().parents[1]
BATCH = 10_000  # records inserted per statement
REPEAT = 3  # each request is timed this often
WEEK = timedelta(days=7).total_seconds()
# (status, share): the records a week of work leaves behind.
STATUSES = [("succeeded", 0.97), ("failed", 0.015), ("queued", 0.005), ("retrying", 0.005)]
STATUSES.append(("running", 1 - sum(share for _, share in STATUSES)))
KINDS = [("welcome_email", 0.9), ("signup_webhook", 0.08), ("process_file", 0.02)]


def configure() -> Path:
    """Settings for this run, before the project reads them; the work directory."""
    work = Path(tempfile.mkdtemp(prefix="records-benchmark-"))
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{work / 'records.db'}")
    os.environ["UPLOAD_DIR"] = str(work / "uploads")
    if not os.environ.get("DASHBOARD_USERNAME"):
        os.environ["DASHBOARD_USERNAME"] = "benchmark"
        os.environ["DASHBOARD_PASSWORD"] = uuid.uuid4().hex
    os.environ.setdefault("METRICS_TOKEN", uuid.uuid4().hex)
    os.environ["METRICS_CACHE_SECONDS"] = "0"  # each scrape reads the figures afresh
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return work


def records(count: int, now: datetime, stuck_after: float, rng: random.Random) -> Iterator[Any]:
    """`count` job records as rows: finished ones spread over the week before `now`, unfinished
    ones over the last 2 * `stuck_after` seconds (about half of them stuck)."""
    statuses = rng.choices([s for s, _ in STATUSES], [w for _, w in STATUSES], k=count)
    kinds = rng.choices([k for k, _ in KINDS], [w for _, w in KINDS], k=count)
    for status, kind in zip(statuses, kinds, strict=True):
        finished = status in {"succeeded", "failed"}
        created = now - timedelta(seconds=rng.uniform(0, WEEK if finished else 2 * stuck_after))
        started = created + timedelta(seconds=rng.uniform(0.002, 0.5))
        ended = started + timedelta(seconds=rng.uniform(0.005, 2))
        key = uuid.uuid4().hex
        yield {
            "id": str(uuid.uuid4()),
            "kind": kind,
            "status": status,
            "payload": {"key": key, "name": "data.csv"} if kind == "process_file" else {},
            "attempts": {"succeeded": 1, "failed": 8, "queued": 0, "retrying": 2}.get(status, 1),
            "progress": 1.0 if finished else 0.0,
            "result": {"sent": True} if status == "succeeded" else None,
            "error": "SMTPServerDisconnected: Connection unexpectedly closed"
            if status in {"failed", "retrying"}
            else None,
            "created_at": created,
            "started_at": None if status == "queued" else started,
            "heartbeat_at": started if status == "running" else None,
            "finished_at": ended if finished else None,
            "due_at": created + timedelta(seconds=8) if status == "retrying" else created,
        }


def fill(count: int) -> float:
    """Delete every job record and signup, then insert `count` records; the seconds it took."""
    from {{ cookiecutter.package_name }} import database, maintenance
    from {{ cookiecutter.package_name }}.settings import get_settings

    tables = database.Base.metadata.tables
    jobs, signups = tables["jobs"], tables["signups"]
    rows = records(
        count, database.utcnow(), get_settings().stuck_job_after.total_seconds(), random.Random(7)
    )
    started = time.perf_counter()
    with database.engine().begin() as connection:
        connection.execute(delete(jobs))
        connection.execute(delete(signups))
        # The indexes are built again after the fill, in one sort each: kept up row by row,
        # they made ten million records take most of an hour.
        for index in jobs.indexes:  # by name: reflection skips SQLite's index of an expression
            connection.exec_driver_sql(f"DROP INDEX IF EXISTS {index.name}")
    while batch := [row for _, row in zip(range(BATCH), rows, strict=False)]:
        with database.engine().begin() as connection:
            connection.execute(jobs.insert(), batch)
    with database.engine().begin() as connection:
        for index in jobs.indexes:
            index.create(connection)
    with database.session() as db:
        maintenance.sum_counts(db)  # as the reconciler does every minute
    if database.engine().dialect.name == "postgresql":
        with database.engine().begin() as connection:
            connection.exec_driver_sql("ANALYZE jobs")  # as autovacuum would, soon
    return time.perf_counter() - started


@contextmanager
def client() -> Iterator[Callable[[str], tuple[int, int]]]:
    """GET a path from the web app, with the dashboard's credentials (the metrics token for
    /metrics): status and size."""
    from {{ cookiecutter.package_name }}.settings import get_settings
    from {{ cookiecutter.package_name }}.web import create_app

    settings = get_settings()
    secret = f"{settings.dashboard_username}:{settings.dashboard_password.get_secret_value()}"
    dashboard = {"Authorization": f"Basic {base64.b64encode(secret.encode()).decode()}"}
    scraper = {"Authorization": f"Bearer {settings.metrics_token.get_secret_value()}"}
{%- if cookiecutter.web_framework == "fastapi" %}
    with TestClient(create_app()) as web:

        def get(path: str) -> tuple[int, int]:
            response = web.get(path, headers=scraper if path == "/metrics" else dashboard)
            return response.status_code, len(response.content)

        yield get
{%- else %}
    web = create_app().test_client()

    def get(path: str) -> tuple[int, int]:
        response = web.get(path, headers=scraper if path == "/metrics" else dashboard)
        return response.status_code, len(response.data)

    yield get
{%- endif %}


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    answer = action()
    return (time.perf_counter() - started) * 1000, answer


class Stop(Exception):
    """Raised after the cleanup's first batch."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0] if __doc__ else None)
    parser.add_argument("count", type=int, help="job records to fill the database with")
    parser.add_argument(
        "--filled", action="store_true", help="time the job records already there instead"
    )
    arguments = parser.parse_args()
    configure()
    subprocess.run(["alembic", "upgrade", "head"], cwd=ROOT, check=True)
    from {{ cookiecutter.package_name }} import cleanup, database, maintenance, reconcile

    jobs = database.Base.metadata.tables["jobs"]
    backend = database.engine().dialect.name
    if arguments.filled:
        with database.session() as db:
            maintenance.sum_counts(db)
            count = db.scalar(select(func.count()).select_from(jobs)) or 0
        print(f"{count} job records on {backend}, already there")
    else:
        count, seconds = arguments.count, fill(arguments.count)
        rate = f"{count / seconds:.0f}/s"
        print(f"{count} job records on {backend}, filled in {seconds:.1f} s ({rate})")

    rows: list[tuple[str, str, str]] = []
    with client() as get:
        for path in [
            "/metrics",
            "/dashboard",
            "/dashboard?kind=welcome_email",
            "/dashboard?status=failed",
            "/dashboard?kind=process_file&status=succeeded",
        ]:
            times, statuses, sizes = [], set(), []
            for _ in range(REPEAT):
                elapsed, (status, size) = timed(functools.partial(get, path))
                times.append(elapsed)
                statuses.add(f"HTTP {status}")
                sizes.append(size)
            answer = f"{', '.join(sorted(statuses))}, {max(sizes) / 1024:.0f} kB"
            median, low, high = statistics.median(times), min(times), max(times)
            spread = f"{median:.0f} (median of {REPEAT}: {low:.0f} to {high:.0f})"
            rows.append((f"GET {path}", spread, answer))

    elapsed, counts = timed(lambda: reconcile.run(lambda job: True))
    rows.append(("reconciler, one run", f"{elapsed:.0f}", str(counts)))
    with database.engine().begin() as connection:  # the stuck jobs all started, just now
        now = database.utcnow()
        unfinished = jobs.c.status.in_(["queued", "retrying", "running"])
        connection.execute(update(jobs).where(unfinished).values(due_at=now, heartbeat_at=now))
    elapsed, counts = timed(lambda: reconcile.run(lambda job: True))
    rows.append(("reconciler, one run, none stuck", f"{elapsed:.0f}", str(counts)))

    def first_batch() -> None:
        raise Stop

    def count_jobs() -> int:
        with database.engine().connect() as connection:
            return int(connection.scalar(select(func.count()).select_from(jobs)) or 0)

    before = count_jobs()
    later = database.utcnow() + timedelta(days=1)
    started = time.perf_counter()
    with suppress(Stop):
        cleanup.delete_expired(later, first_batch)
    elapsed = (time.perf_counter() - started) * 1000
    rows.append(("cleanup, one batch", f"{elapsed:.0f}", f"{before - count_jobs()} deleted"))

    width = max(len(what) for what, _, _ in rows)
    print(f"\n| {'what':<{width}} | ms | answer |")
    print(f"|{'-' * (width + 2)}|---|---|")
    for what, ms, answer in rows:
        print(f"| {what:<{width}} | {ms} | {answer} |")


if __name__ == "__main__":
    main()
