"""The use cases, written once for every framework and queue: sign up, upload a file, follow,
retry and cancel a job, the dashboard and the metrics, and the app's health.

Each one says what it answers, and what it does when the broker or the database is down: it
raises `Refused` with the HTTP status and message that explain why. The web layers translate
HTTP to these calls and back, and nothing more. The queue is reached through `Queue`, which each
queue's `client.Client` implements.
"""

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Literal, Protocol

import structlog
from prometheus_client.metrics_core import Metric
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from . import api, dashboard, database, files, idempotency, metrics, records, tracing
from .api import Refused
from .jobs import BrokerUnavailable
from .leases import DATABASE_UNAVAILABLE
from .models import Job, JobKind, JobStatus
from .settings import Settings

logger = structlog.get_logger(__name__)


class Queue(Protocol):
    """What the web app needs of the queue: `client.Client`, for Celery or ARQ."""

    def publish(self, job: Job) -> bool:
        """Hand a recorded job to the broker, or raise BrokerUnavailable within seconds."""

    def ping(self) -> None:
        """Raise if the broker does not answer within seconds."""

    def depths(self) -> dict[str, int]:
        """Messages waiting in each queue, or raise BrokerUnavailable."""


class Service:
    def __init__(self, settings: Settings, queue: Queue) -> None:
        self.settings = settings
        self.queue = queue
        self.engine = database.engine(settings)
        self.uploads = files.Uploads(settings.upload_dir)
        self.figures = metrics.Cache(settings.metrics_cache_seconds)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction; the database being unavailable is a 503, not an error."""
        with _available(), database.session(self.engine) as db:
            yield db

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A transaction for Core statements only, cheaper than a session; 503 as `session`."""
        with _available(), database.transaction(self.engine) as db:
            yield db

    def sign_up(self, signup: api.SignupIn, idempotency_key: str | None = None) -> api.Accepted:
        """Record a signup with its jobs (the welcome email, and the webhook if WEBHOOK_URL is
        set), and queue them; once per idempotency key (the fingerprint: the signup)."""
        key = idempotency.parse(idempotency_key)

        def record() -> api.Accepted:
            notify = bool(self.settings.webhook_url)
            with self.transaction() as db:
                recorded = records.create_signup_jobs(
                    db, signup.email, signup.name, notify, tracing.carrier()
                )
            return self._queue(recorded)

        return self._once(key, "POST /signups", [signup.model_dump_json()], record)

    def upload(
        self,
        stream: files.Source,
        filename: str,
        content_type: str,
        idempotency_key: str | None = None,
    ) -> api.Accepted:
        """Store an upload, record the job that processes it, and queue it; once per idempotency
        key (the fingerprint: the file's SHA-256, its name and its content type)."""
        key = idempotency.parse(idempotency_key)
        limit = self.settings.max_upload_bytes
        try:
            stored = self.uploads.store(stream, filename, content_type, limit)
        except files.UploadTooLarge as exc:
            raise Refused(413, str(exc)) from exc
        except files.StorageFull as exc:
            # 507 Insufficient Storage rather than 503: every dependency answers and the request
            # is sound, but this server has no room to keep it until an operator makes some.
            logger.error("no room to store uploads", directory=str(exc.directory))
            raise Refused(507, "there is no room to store the file; try again later") from exc
        parts = [self.uploads.sha256(stored.key), filename, content_type] if key else []

        def record() -> api.Accepted:
            with self.session() as db:
                payload = stored.to_payload()
                job = records.create_job(db, JobKind.PROCESS_FILE, payload, tracing.carrier())
            return self._queue([job])

        return self._once(
            key, "POST /files", parts, record, lambda: self.uploads.delete(stored.key)
        )

    def job(self, job_id: str) -> api.JobOut:
        with self.session() as db:
            return api.JobOut.of(self._get(db, job_id))

    def retry(self, job_id: str) -> api.Accepted:
        """Queue a failed job again, with a fresh count of attempts; 409 unless it failed. If the
        broker is down, it stays failed."""
        with self.session() as db:
            job = self._get(db, job_id)
            before = records.reopen(db, job_id)
        if before is None:
            raise Refused(409, f"only a failed job can be retried; this one is {job.status}")
        try:
            self.queue.publish(before)
        except BrokerUnavailable as exc:
            with self.session() as db:
                records.restore(db, before)
            raise Refused(503, dashboard.QUEUE_DOWN) from exc
        logger.info("job retried", job_id=job_id, attempts=before.attempts, error=before.error)
        return api.Accepted(job_id=job_id, kind=before.kind, status="queued", url=f"/jobs/{job_id}")

    def cancel(self, job_id: str) -> api.JobOut:
        """Cancel a job that has not run yet, or a file job that runs: it never runs, or stops
        at its next progress report. 409 for one that is finished, or being sent."""
        with self.session() as db:
            was, job = records.cancel(db, job_id) if api.is_job_id(job_id) else (None, None)
        if job is None:
            raise Refused(404, f"no job with id {job_id!r}")
        if was is None:
            if job.status == JobStatus.RUNNING:
                raise Refused(409, f"this {job.kind} job is being sent and cannot be unsent")
            raise Refused(409, f"this job has finished ({job.status}) and cannot be cancelled")
        if job.kind == JobKind.PROCESS_FILE and was != JobStatus.RUNNING:
            self.uploads.delete(job.payload["key"])  # a run under way deletes them as it stops
        logger.info("job cancelled", job_id=job_id, kind=job.kind)
        return api.JobOut.of(job)

    def health(self) -> api.Health:
        """Whether the database and the broker answer. Why not goes to the log, not the answer:
        it may name hosts and users."""
        checks = {
            "database": _check("database", lambda: database.ping(self.engine)),
            "broker": _check("broker", self.queue.ping),
        }
        healthy = all(check == "ok" for check in checks.values())
        return api.Health(status="ok" if healthy else "unavailable", checks=checks)

    def queue_depths(self) -> dict[str, int] | None:
        """Messages in each queue, or None if the broker does not answer."""
        try:
            return self.queue.depths()
        except BrokerUnavailable:
            return None

    def metrics(self, accept: str, authorization: str | None) -> tuple[bytes, str]:
        """The Prometheus exposition, and its content type, for the bearer of METRICS_TOKEN only
        (404 while it is unset). The figures are read at most once per METRICS_CACHE_SECONDS."""
        token = self.settings.metrics_token.get_secret_value()
        if not token:
            raise Refused(404, "Not Found")
        if not metrics.bearer_of(token, authorization):
            raise Refused(401, "the metrics token is required", metrics.CHALLENGE)
        return metrics.exposition(self.figures.get(self._read_figures), accept)

    def _read_figures(self) -> list[Metric]:
        depths = self.queue_depths()
        with self.session() as db:
            return metrics.read(db, depths)

    def overview_page(self, kind: str | None, status: str | None) -> str:
        depths = self.queue_depths()
        with self.session() as db:
            try:
                return dashboard.overview_page(db, self.settings, kind, status, depths)
            except ValueError as exc:  # an unknown kind or status to filter by
                raise Refused(400, str(exc)) from exc

    def job_page(self, job_id: str) -> str:
        with self.session() as db:
            job = self._get(db, job_id)
            return dashboard.job_page(self.settings, job, records.attempts_of(db, job_id))

    def _once(
        self,
        key: str | None,
        route: str,
        parts: Sequence[str],
        act: Callable[[], api.Accepted],
        undo: Callable[[], None] = lambda: None,
    ) -> api.Accepted:
        """`act` once per idempotency key: see `idempotency`."""
        request = idempotency.Request(key, route, idempotency.fingerprint(*parts)) if key else None
        ttl = self.settings.idempotency_ttl
        try:
            return idempotency.once(self.session, request, ttl, act, undo)
        except idempotency.Conflict as exc:
            raise Refused(exc.status, str(exc)) from exc

    def _get(self, db: Session, job_id: str) -> Job:
        job = records.get_job(db, job_id) if api.is_job_id(job_id) else None
        if job is None:
            raise Refused(404, f"no job with id {job_id!r}")
        return job

    def _queue(self, recorded: Sequence[Job]) -> api.Accepted:
        """Hand recorded jobs to the queue; if the broker is down, take them all back (records,
        signup, upload) and answer 503."""
        try:
            for job in recorded:
                self.queue.publish(job)
        except BrokerUnavailable as exc:
            logger.warning("broker unavailable", error=str(exc))
            with self.session() as db:
                for job in recorded:
                    records.discard(db, job.id)
            for job in recorded:
                if job.kind == JobKind.PROCESS_FILE:
                    self.uploads.delete(job.payload["key"])
            raise Refused(503, api.QUEUE_DOWN) from exc
        return api.accepted(*recorded)


def _check(name: str, probe: Callable[[], None]) -> Literal["ok", "unavailable"]:
    try:
        probe()
    except Exception as exc:
        logger.warning("health check failed", dependency=name, error=f"{type(exc).__name__}: {exc}")
        return "unavailable"
    return "ok"


@contextmanager
def _available() -> Iterator[None]:
    """The database being unavailable, within: a 503, not an error."""
    try:
        yield
    except DATABASE_UNAVAILABLE as exc:
        logger.warning("database unavailable", error=str(exc))
        raise Refused(503, api.DATABASE_DOWN) from exc
