"""The jobs dashboard, whichever framework serves it: who may see it, what it shows, retries.

It is closed unless DASHBOARD_USERNAME and DASHBOARD_PASSWORD are set: the web app then adds no
dashboard route at all. With them, every request needs HTTP basic auth with those credentials.
Browsers send basic auth credentials by themselves, so a request that changes something is also
refused when a browser says it comes from another site's page (cross-site request forgery), and
the pages may not be framed by another site (clickjacking).
"""

import base64
import binascii
import json
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Self
from urllib.parse import urlsplit

from jinja2 import Environment, PackageLoader, StrictUndefined
from sqlalchemy.orm import Session

from . import records, stats
from .database import utcnow
from .models import Attempt, Job, JobKind, JobStatus
from .settings import Settings

RECENT_JOBS = 50
CHART_MINUTES = 60
QUEUE_DOWN = "the job queue is unavailable; the job is still failed, try again later"
CHALLENGE = {"WWW-Authenticate": 'Basic realm="jobs dashboard", charset="UTF-8"'}
# Sent with every page: never cached, never framed, no script, forms post to this site only.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}

_templates = Environment(
    loader=PackageLoader(__package__ or __name__.rpartition(".")[0], "templates/dashboard"),
    autoescape=True,
    undefined=StrictUndefined,
)


@dataclass(frozen=True)
class Credentials:
    username: bytes
    password: bytes

    @classmethod
    def configured(cls, settings: Settings) -> Self | None:
        """The dashboard's credentials, or None when it is closed."""
        password = settings.dashboard_password.get_secret_value()
        if not settings.dashboard_username or not password:
            return None
        return cls(settings.dashboard_username.encode(), password.encode())

    def accept(self, authorization: str | None) -> bool:
        """Whether an `Authorization` header carries these credentials (in constant time)."""
        scheme, _, encoded = (authorization or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True)
        except binascii.Error:
            return False
        username, colon, password = decoded.partition(b":")
        return bool(colon) and self.match(username, password)

    def match(self, username: bytes, password: bytes) -> bool:
        """Whether these are the credentials, compared in constant time."""
        same_username = secrets.compare_digest(username, self.username)
        same_password = secrets.compare_digest(password, self.password)
        return same_username and same_password


def cross_site(fetch_site: str | None, origin: str | None, host: str | None) -> bool:
    """Whether a browser sent this request from another site's page.

    Browsers say where a request comes from (`Sec-Fetch-Site`, or else `Origin`) and pages cannot
    forge it; a request without either comes from a program such as curl, not from a page.
    """
    if fetch_site is not None:
        return fetch_site not in {"same-origin", "none"}
    if origin is not None:
        return urlsplit(origin).netloc != host
    return False


def overview_page(
    db: Session,
    settings: Settings,
    kind: str | None,
    status: str | None,
    depths: Mapping[str, int] | None,
) -> str:
    """The dashboard: counts, queues, workers and the latest jobs, filtered by kind and status."""
    chosen_kind = _choice("kind", kind, JobKind)
    chosen_status = _choice("status", status, JobStatus)
    counts = stats.counts(db)
    return _templates.get_template("overview.html").render(
        app_name=settings.app_name,
        kinds=list(JobKind),
        statuses=list(JobStatus),
        counts=counts,
        totals={k: sum(counts[(k, s)] for s in JobStatus) for k in JobKind},
        depths=depths,
        last_finished=stats.last_finished(db),
        per_minute=stats.per_minute(db, utcnow(), CHART_MINUTES),
        minutes=CHART_MINUTES,
        jobs=stats.recent(db, chosen_kind, chosen_status, RECENT_JOBS),
        kind=chosen_kind,
        status=chosen_status,
        limit=RECENT_JOBS,
        now=utcnow(),
    )


def job_page(settings: Settings, job: Job, attempts: Sequence[Attempt]) -> str:
    """One job in full, with its attempts, and a button to retry it if it failed, or cancel it
    if it has not run yet or is a file job that runs."""
    return _templates.get_template("job.html").render(
        app_name=settings.app_name,
        job=job,
        attempts=attempts,
        now=utcnow(),
        failed=JobStatus.FAILED,
        cancellable=records.cancellable(job),
    )


def _choice(name: str, value: str | None, choices: Iterable[str]) -> str | None:
    if value and value not in set(choices):
        raise ValueError(f"unknown {name} {value!r}")
    return value or None


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "—"


def _when_short(moment: datetime) -> str:
    return moment.strftime("%m-%d %H:%M:%S")


def _seconds(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def _took(job: Job) -> float | None:
    if job.started_at is None or job.finished_at is None:
        return None
    return (job.finished_at - job.started_at).total_seconds()


def _between(start: datetime | None, end: datetime | None) -> float | None:
    return (end - start).total_seconds() if start and end else None


_templates.filters["when"] = _when
_templates.filters["when_short"] = _when_short
_templates.filters["seconds"] = _seconds
_templates.filters["pretty_json"] = lambda value: json.dumps(value, indent=2, sort_keys=True)
_templates.globals["took"] = _took
_templates.globals["between"] = _between
_templates.filters["zip_sum"] = lambda one, other: [a + b for a, b in zip(one, other, strict=True)]
