"""The Celery app: the broker settings, the tasks that run each job, and the cleanup schedule.

Short I/O-bound jobs (emails, the cleanup) and CPU-bound ones (uploaded files) have their own
queue (QUEUE, FILE_QUEUE) and worker, sized for their kind of work, so that a burst of files never
delays an email. The Procfile starts them: `worker` with 16 threads for QUEUE, `file_worker` with
one process per core for FILE_QUEUE, and exactly one `scheduler` (beat).
"""

{% if cookiecutter.broker == "sqs" -%}
import ipaddress
{% endif -%}
from typing import Any
{%- if cookiecutter.broker == "sqs" %}
from urllib.parse import urlsplit
{%- endif %}

from celery import Celery, Task
from celery.signals import worker_process_init
from kombu.exceptions import KombuError, OperationalError

from . import cleanup, database, jobs
from .records import Job, JobKind
from .settings import get_settings

settings = get_settings()
QUEUE = "{{ cookiecutter.package_name }}"
FILE_QUEUE = "{{ cookiecutter.package_name }}.files"
{%- if cookiecutter.broker == "sqs" %}


def _is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

{%- endif %}


app = Celery("{{ cookiecutter.package_name }}")
app.conf.update(
    broker_url=settings.broker_url,
    broker_connection_timeout=3,
    broker_connection_retry_on_startup=True,
    broker_connection_max_retries=None,  # workers wait for the broker to come back
    broker_transport_options={
{%- if cookiecutter.broker == "redis" %}
        # Unacknowledged messages go back to the queue after the visibility timeout; every
        # worker looks for them every 5 s, so a lost job runs again within about 35 s.
        "visibility_timeout": settings.broker_visibility_timeout,
        "unacked_restore_interval": 5,
        "unacked_restore_throttle": 1,
        "socket_connect_timeout": 3,
        "socket_timeout": 10,
{%- elif cookiecutter.broker == "sqs" %}
        # A received message becomes visible again after this timeout unless the worker acked it.
        "visibility_timeout": settings.broker_visibility_timeout,
        "queue_name_prefix": "{{ cookiecutter.project_slug }}-",
        # An idle worker waits for messages in one long poll of up to 10 s. While all its slots
        # are busy it checks every 50 ms for a free one (locally, no request): the default of
        # 1 s would hold each finished slot idle for a second, two jobs a second per worker.
        "wait_time_seconds": 10,
        "polling_interval": 0.05,
        "is_secure": not _is_loopback(urlsplit(settings.broker_url).hostname),
        "client-config": {"connect_timeout": 3, "read_timeout": 20, "retries": {"max_attempts": 2}},
{%- else %}
        "confirm_publish": True,
{%- endif %}
    },
    task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 1},
    task_default_queue=QUEUE,
    # A worker started without -Q consumes both queues; the Procfile gives each kind its own.
    task_queues={QUEUE: {"routing_key": QUEUE}, FILE_QUEUE: {"routing_key": FILE_QUEUE}},
    task_routes={"{{ cookiecutter.package_name }}.process_file": {"queue": FILE_QUEUE}},
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,  # outcomes live in the job records
    timezone="UTC",
    enable_utc=True,
    task_acks_late=True,  # a job's message is acknowledged after the job, not before
    task_reject_on_worker_lost=True,  # a worker killed mid-job gives its message back
    worker_prefetch_multiplier=1,  # each worker holds one message per slot, no more
    worker_cancel_long_running_tasks_on_connection_loss=True,
    broker_channel_error_retry=True,
    beat_schedule={
        "cleanup": {
            "task": "{{ cookiecutter.package_name }}.cleanup",
            "schedule": settings.cleanup_interval,
            "options": {"expires": settings.cleanup_interval.total_seconds()},
        }
    },
)


@worker_process_init.connect
def _new_engine_per_process(**_: Any) -> None:
    # Pool processes are forked: never share the parent's database connections.
    database.engine().dispose(close=False)


def _run(task: Task, job_id: str) -> None:
    try:
        jobs.run(job_id)
    except jobs.RetryLater as exc:
        raise task.retry(countdown=exc.delay, max_retries=None) from exc


@app.task(
    bind=True,
    name="{{ cookiecutter.package_name }}.send_welcome_email",
    soft_time_limit=settings.email_timeout,
    time_limit=settings.email_timeout + 5,
)
def send_welcome_email(self: Task, job_id: str) -> None:
    _run(self, job_id)


@app.task(
    bind=True,
    name="{{ cookiecutter.package_name }}.process_file",
    soft_time_limit=settings.file_timeout,
    time_limit=settings.file_timeout + 10,
)
def process_file(self: Task, job_id: str) -> None:
    _run(self, job_id)


@app.task(
    name="{{ cookiecutter.package_name }}.cleanup",
    soft_time_limit=settings.cleanup_timeout,
    time_limit=settings.cleanup_timeout + 5,
)
def run_cleanup() -> dict[str, int]:
    return cleanup.delete_expired()


TASKS = {JobKind.WELCOME_EMAIL: send_welcome_email, JobKind.PROCESS_FILE: process_file}


def enqueue(job: Job) -> None:
    """Publish the job, or raise BrokerUnavailable within a few seconds."""
    try:
        TASKS[JobKind(job.kind)].apply_async((job.id,), task_id=job.id)
    except (OperationalError, KombuError, OSError) as exc:
        raise jobs.BrokerUnavailable(f"broker unavailable: {exc}") from exc


def ping() -> None:
    """Raise if the broker does not answer within a few seconds."""
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=3)
        connection.default_channel  # noqa: B018 - opening a channel talks to the broker
