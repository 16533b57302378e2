"""Celery workers for the tests: one in a thread of this process, or real worker processes."""

import os
import re
import subprocess
import sys
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

TEST_BROKER_URL = os.environ.get("TEST_BROKER_URL")
os.environ["BROKER_URL"] = TEST_BROKER_URL or "memory://"
# A worker process shares no memory with the tests: it needs a real broker.
CROSS_PROCESS = TEST_BROKER_URL is not None
{%- if cookiecutter.broker == "redis" %}
UNREACHABLE_BROKER_URL = "redis://127.0.0.1:9/0"
{%- elif cookiecutter.broker == "rabbitmq" %}
UNREACHABLE_BROKER_URL = "amqp://guest:guest@127.0.0.1:9//"
{%- else %}
UNREACHABLE_BROKER_URL = "sqs://test:test@127.0.0.1:9"
{%- endif %}

from celery.contrib.testing.worker import start_worker  # noqa: E402

from {{ cookiecutter.package_name }} import worker as queue  # noqa: E402


class ThreadWorker:
    """A real Celery worker consuming in a thread of the test process."""

    def __init__(self) -> None:
        self._stack = ExitStack()

    def start(self) -> None:
        worker = self._stack.enter_context(
            start_worker(
                queue.app,
                pool="threads",
                concurrency=4,
                queues=list(queue.PROCESSES),  # every queue: it stands for each kind of worker
                perform_ping_check=False,
                shutdown_timeout=30,
                loglevel="INFO",
            )
        )
        # Wake the worker's event loop often, so that it sees stop() at once rather than at the
        # next message from the broker.
        worker.consumer.timer.call_repeatedly(0.5, lambda: None)

    def stop(self) -> None:
        self._stack.close()


def purge() -> None:
    queue.app.control.purge()


# Messages that are not Celery's, as another program, or a bug, could put on the queue, and what
# the worker's log must show of them.
POISON = ("not a message", '{"json": "but not a message"}')
{%- if cookiecutter.broker == "rabbitmq" %}
POISON_LOGGED = ("not a message", "{'json': 'but not a message'}")  # Celery decoded the JSON
{%- else %}
POISON_LOGGED = POISON
{%- endif %}


def push_poison() -> None:
    """Messages no worker can run, on the queue of the `worker` process."""
{%- if cookiecutter.broker == "redis" %}
    with queue.app.connection_for_write() as connection:
        client = connection.default_channel.client
        client.lpush(queue.QUEUE, *POISON)
{%- elif cookiecutter.broker == "rabbitmq" %}
    with queue.app.connection_for_write() as connection:
        producer = connection.Producer()
        producer.publish(POISON[0], routing_key=queue.QUEUE, content_type="text/plain")
        producer.publish(POISON[1], routing_key=queue.QUEUE, content_type="application/json")
{%- else %}
    with queue.app.connection_for_write() as connection:
        channel = connection.default_channel
        url = channel._new_queue(queue.QUEUE)
        client = channel.sqs(queue=channel.entity_name(queue.QUEUE))
        for body in POISON:
            client.send_message(QueueUrl=url, MessageBody=body)
{%- endif %}


def start_process() -> subprocess.Popen[bytes]:
    """A worker process, started as the Procfile starts it."""
    celery = Path(sys.executable).with_name("celery")
    command = [str(celery), "-A", queue.__name__, "worker", "--concurrency", "1"]
    return subprocess.Popen(command, start_new_session=True)


def trigger_cleanup() -> None:
    queue.run_cleanup.delay()


def reconcile_now() -> dict[str, int]:
    """Run the reconciler here, as the schedule runs it in a worker."""
    return queue.reconcile_jobs()  # type: ignore[no-any-return]


def cleanup_every_seconds() -> float:
    return float(queue.app.conf.beat_schedule["cleanup"]["schedule"].total_seconds())


def reconcile_every_seconds() -> float:
    return float(queue.app.conf.beat_schedule["reconcile"]["schedule"].total_seconds())


# The Procfile processes that take part in the queue (not web).
WORKER_PROCESSES = ("worker", "file_worker", "scheduler")

# The Procfile processes that run the schedule: one beat, whatever the number of workers.
SCHEDULE_PROCESSES = ("scheduler",)


def cleanup_runs(log: str) -> list[tuple[float, str]]:
    """When each cleanup that a worker process's log shows it ran ended, and its task id."""
    name = re.escape(queue.run_cleanup.name)
    # The date and time at the start of the line, in Celery's format or in ours.
    when = r"^\W*(\d\d\d\d-\d\d-\d\d)[T ](\d\d:\d\d:\d\d)\S* "
    pattern = rf"{when}.*Task {name}\[([\w-]+)\] succeeded"
    return [
        (datetime.strptime(f"{day} {when}", "%Y-%m-%d %H:%M:%S").timestamp(), task_id)
        for day, when, task_id in re.findall(pattern, log, re.MULTILINE)
    ]
