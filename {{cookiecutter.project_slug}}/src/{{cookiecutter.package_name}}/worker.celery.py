"""The Celery app: the broker settings, the tasks that run each job, and the schedule.

Short I/O-bound jobs (emails, webhooks, the scheduled work) and CPU-bound ones (uploaded files)
have their own queue (QUEUE, FILE_QUEUE) and worker, sized for their kind of work, so that a burst
of files never delays an email. The Procfile starts them: `worker` with 16 threads for QUEUE,
`file_worker` with one process per core for FILE_QUEUE, and exactly one `scheduler` (beat). Start
as many workers as you like, on one host or many: each process gets a node name of its own.
"""

import os
import secrets
import threading
from typing import Any
{%- if cookiecutter.broker == "sqs" %}
from urllib.parse import urlsplit
{%- endif %}

import structlog
from celery import Celery, Task
from celery.app import trace
from celery.signals import celeryd_init, setup_logging, worker_process_init
from kombu.exceptions import KombuError, OperationalError

from . import cleanup, database, heartbeat, jobs, logs, reconcile, tracing{% if cookiecutter.broker != "rabbitmq" %}, transport{% endif %}
from .models import Job, JobKind
from .settings import get_settings

logger = structlog.get_logger(__name__)
settings = get_settings()
QUEUE = "{{ cookiecutter.package_name }}"
FILE_QUEUE = "{{ cookiecutter.package_name }}.files"
QUEUES = (QUEUE, FILE_QUEUE)  # every queue a worker consumes, for the queue depths
# The kind of worker process that serves each queue, as the Procfile names it.
PROCESSES = {QUEUE: "worker", FILE_QUEUE: "file_worker"}



{%- if cookiecutter.broker != "rabbitmq" %}

transport.register()  # the broker's kombu transport, with our fixes, under kombu's own name(s)
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
        # One worker at a time looks, under a lock in Redis; a worker cut off or killed while it
        # holds the lock leaves it to expire: after 10 s, not kombu's 5 minutes.
        "unacked_mutex_expire": 10,
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
        "is_secure": not (
            settings.sqs_plain_http or transport.is_loopback(urlsplit(settings.broker_url).hostname)
        ),
        "client-config": {"connect_timeout": 3, "read_timeout": 20, "retries": {"max_attempts": 2}},
{%- else %}
        "confirm_publish": True,
{%- endif %}
    },
    task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 1},
    task_default_queue=QUEUE,
    # A worker started without -Q consumes both queues; the Procfile gives each kind its own.
    task_queues={name: {"routing_key": name} for name in QUEUES},
    task_routes={"{{ cookiecutter.package_name }}.process_file": {"queue": FILE_QUEUE}},
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,  # outcomes live in the job records
    timezone="UTC",
    heartbeat_processes=PROCESSES,  # for heartbeat.Heartbeat
    enable_utc=True,
    task_acks_late=True,  # a job's message is acknowledged after the job, not before
    task_reject_on_worker_lost=True,  # a worker killed mid-job gives its message back
    worker_prefetch_multiplier=1,  # each worker holds one message per slot, no more
    worker_cancel_long_running_tasks_on_connection_loss=True,
    # After a reconnect Celery would lower the prefetch count, then raise it as each job running
    # then finishes. In the thread pool that happens in the pool's threads, on a connection that
    # is not thread-safe: several at once deadlocked the worker. It takes its full share at once.
    worker_enable_prefetch_count_reduction=False,
{%- if cookiecutter.broker != "sqs" %}
    # No task events unless someone watches: Flower turns them on in every worker while it runs
    # (its `enable_events`, every few seconds), and then shows each task from the moment a worker
    # receives it. Sent to no one, they cost the worker three publishes per job. Never the "sent"
    # event: the web process would publish it for every job, one at a time.
    worker_send_task_events=False,
{%- endif %}
    broker_channel_error_retry=True,
    beat_schedule={
        "cleanup": {
            "task": "{{ cookiecutter.package_name }}.cleanup",
            "schedule": settings.cleanup_interval,
            "options": {"expires": settings.cleanup_interval.total_seconds()},
        },
        "reconcile": {
            "task": "{{ cookiecutter.package_name }}.reconcile",
            "schedule": reconcile.every(),
            "options": {"expires": reconcile.every().total_seconds()},
        },
    },
)


@setup_logging.connect
def _configure_logs(**_: Any) -> None:
    # Connected, this replaces Celery's own logging setup in the worker and in beat.
    logs.configure()
    tracing.configure("worker")


@worker_process_init.connect
def _new_engine_per_process(**_: Any) -> None:
    # Pool processes are forked: never share the parent's database connections.
    database.engine().dispose(close=False)


@celeryd_init.connect
def _unique_node_name(instance: Any, **_: Any) -> None:
    """Add this process's own tag to the node name given with `-n` (`worker@host` becomes
    `worker.<pid>.<random>@host`): workers started by the same command on one host (honcho
    -c worker=3, systemd instances, containers sharing a host name) would otherwise share a name,
    and all but the first would be locked out of the broker's remote-control queue."""
    name, _, host = instance.hostname.partition("@")
    instance.hostname = f"{name}.{os.getpid()}.{secrets.token_hex(2)}@{host}"
    trace.setup_worker_optimizations(instance.app, instance.hostname)


app.steps["consumer"].add(heartbeat.Heartbeat)


def _run(task: Task, job_id: str) -> None:
    try:
        jobs.run(job_id, delivery=task.request.retries + 1)
    except jobs.RetryLater as exc:
        raise task.retry(countdown=exc.delay) from exc


@app.task(
    bind=True,
    name="{{ cookiecutter.package_name }}.send_welcome_email",
    max_retries=None,  # the job record bounds the attempts
    soft_time_limit=settings.email_timeout,
    time_limit=settings.email_timeout + 5,
)
def send_welcome_email(self: Task, job_id: str) -> None:
    _run(self, job_id)


@app.task(
    bind=True,
    name="{{ cookiecutter.package_name }}.process_file",
    max_retries=None,  # the job record bounds the attempts
    soft_time_limit=settings.file_timeout,
    time_limit=settings.file_timeout + 10,
)
def process_file(self: Task, job_id: str) -> None:
    _run(self, job_id)


@app.task(
    bind=True,
    name="{{ cookiecutter.package_name }}.send_webhook",
    max_retries=None,  # the job record bounds the attempts
    soft_time_limit=settings.webhook_timeout,
    time_limit=settings.webhook_timeout + 5,
)
def send_webhook(self: Task, job_id: str) -> None:
    _run(self, job_id)


@app.task(
    name="{{ cookiecutter.package_name }}.cleanup",
    soft_time_limit=settings.cleanup_timeout,
    time_limit=settings.cleanup_timeout + 5,
)
def run_cleanup() -> dict[str, int]:
    return cleanup.delete_expired()


@app.task(
    name="{{ cookiecutter.package_name }}.reconcile",
    soft_time_limit=settings.cleanup_timeout,
    time_limit=settings.cleanup_timeout + 5,
)
def reconcile_jobs() -> dict[str, int]:
    return reconcile.run(republish)


TASKS = {
    JobKind.WELCOME_EMAIL: send_welcome_email,
    JobKind.PROCESS_FILE: process_file,
    JobKind.SIGNUP_WEBHOOK: send_webhook,
}


def enqueue(job: Job) -> None:
    """Publish the job, or raise BrokerUnavailable within a few seconds."""
    try:
        TASKS[JobKind(job.kind)].apply_async((job.id,), task_id=job.id)
    except (OperationalError, KombuError, OSError) as exc:
        raise jobs.BrokerUnavailable(f"broker unavailable: {exc}") from exc
    logger.info("job enqueued", job_id=job.id, kind=job.kind)


def republish(job: Job) -> bool:
    """Publish a job that seems stuck, unless its queue still has messages waiting: its own may
    be among them (a broker cannot say whether one message is in a queue)."""
    queue = FILE_QUEUE if job.kind == JobKind.PROCESS_FILE else QUEUE
    if queue_depths()[queue] > 0:
        return False
    enqueue(job)
    return True


# A connection of its own for reading queue depths, opened on first use and then kept.
_depths_connection = app.connection_for_read()
_depths_lock = threading.Lock()


def queue_depths() -> dict[str, int]:
    """Messages waiting in each queue (not those a worker holds), or raise BrokerUnavailable."""
    connection = _depths_connection
    with _depths_lock:
        try:
            connection.ensure_connection(max_retries=1, timeout=3)
            return {queue: _depth(connection, queue) for queue in QUEUES}
        except (*connection.connection_errors, OperationalError, KombuError, OSError) as exc:
            connection.close()  # connect afresh next time
            raise jobs.BrokerUnavailable(f"broker unavailable: {exc}") from exc


def _depth(connection: Any, queue: str) -> int:
    try:
        declared = connection.default_channel.queue_declare(queue=queue, passive=True)
    except connection.channel_errors:
        # No such queue yet{% if cookiecutter.broker == "redis" %} (Redis keeps no empty list){% elif cookiecutter.broker == "rabbitmq" %}, and RabbitMQ closed the channel{% endif %}: start afresh next time.
        connection.close()
        return 0
    return int(declared.message_count)
