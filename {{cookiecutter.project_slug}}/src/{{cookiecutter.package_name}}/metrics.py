"""Prometheus metrics, read from the job records and the broker.

Nothing is counted in memory: a scrape of any web process reads the same records and queues, so
the figures are right however many web processes and workers (and their forked children) run.
Each process reads them at most once per METRICS_CACHE_SECONDS, however often it is scraped.
"""

import hmac
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.samples import Sample
from sqlalchemy.orm import Session

from . import stats
from .database import utcnow
from .models import JobKind

# The durations are those of each kind's latest finished jobs, at most this many.
DURATION_SAMPLE = 1000
QUANTILES = (0.5, 0.9, 0.99)
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="metrics"'}


class JobsCollector:
    """Collects the figures once per scrape; `queue_depths` is None when the broker is down."""

    def __init__(self, db: Session, queue_depths: Mapping[str, int] | None) -> None:
        self.db = db
        self.queue_depths = queue_depths

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily(
            "jobs", "Job records by kind and status.", labels=["kind", "status"]
        )
        for (kind, status), number in stats.counts(self.db).items():
            jobs.add_metric([kind, status], number)
        yield jobs

        if self.queue_depths is not None:
            depth = GaugeMetricFamily(
                "jobs_queue_depth", "Messages waiting in each queue.", labels=["queue"]
            )
            for queue, messages in self.queue_depths.items():
                depth.add_metric([queue], messages)
            yield depth

        now = utcnow()
        oldest = stats.oldest_queued(self.db)
        age = GaugeMetricFamily(
            "jobs_oldest_queued_age_seconds",
            "Age of the oldest job of each kind still waiting for a worker (0 if none).",
            labels=["kind"],
        )
        for kind in JobKind:
            created = oldest.get(kind)
            age.add_metric([kind], (now - created).total_seconds() if created else 0.0)
        yield age

        last = GaugeMetricFamily(
            "jobs_last_finished_timestamp_seconds",
            "When a job of each kind last finished, succeeded or failed.",
            labels=["kind"],
        )
        for kind, finished_at in stats.last_finished(self.db).items():
            last.add_metric([kind], finished_at.timestamp())
        yield last

        yield GaugeMetricFamily(
            "jobs_republished",
            "Publications of jobs whose message seemed lost, over the job records kept.",
            value=stats.republications(self.db),
        )

        durations = SummaryMetricFamily(
            "jobs_duration_seconds",
            f"Run time of the last attempt of each kind's latest {DURATION_SAMPLE} finished jobs.",
            labels=["kind"],
        )
        for kind, seconds in stats.durations(self.db, DURATION_SAMPLE).items():
            ordered = sorted(seconds)
            for quantile in QUANTILES if ordered else ():
                rank = max(math.ceil(quantile * len(ordered)) - 1, 0)
                labels = {"kind": kind, "quantile": str(quantile)}
                durations.samples.append(Sample(durations.name, labels, ordered[rank]))
            durations.add_metric([kind], len(ordered), sum(ordered))
        yield durations


class Figures:
    """Figures already read, to collect again."""

    def __init__(self, metrics: Sequence[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return iter(self.metrics)


class Cache:
    """The figures last read, kept for `seconds`: scrapes meanwhile, and those waiting while they
    are read, get them without a query."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._lock = threading.Lock()
        self._figures: list[Metric] = []
        self._read_at = -math.inf

    def get(self, read: Callable[[], list[Metric]]) -> list[Metric]:
        with self._lock:
            if time.monotonic() - self._read_at >= self.seconds:
                self._figures = read()
                self._read_at = time.monotonic()
            return self._figures


def read(db: Session, queue_depths: Mapping[str, int] | None) -> list[Metric]:
    return list(JobsCollector(db, queue_depths).collect())


def bearer_of(token: str, authorization: str | None) -> bool:
    """Whether an Authorization header carries `token`, compared in constant time."""
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), token.encode())


def exposition(figures: Sequence[Metric], accept: str = "") -> tuple[bytes, str]:
    """The metrics page, in the format the scraper's `Accept` header asks for; its content type."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Figures(figures))
    encode, content_type = choose_encoder(accept)
    return encode(registry), content_type
