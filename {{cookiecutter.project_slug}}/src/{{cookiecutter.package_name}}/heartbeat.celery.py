"""The Celery worker's heartbeat: a bootstep that, while the worker consumes, touches the heartbeat
file of each kind of process it serves (see health.py), on the loop that takes the jobs. The app's
`heartbeat_processes` setting names the kind of process that serves each queue.
"""

from typing import Any

from celery import bootsteps

from . import health
from .settings import get_settings


class Heartbeat(bootsteps.StartStopStep):  # type: ignore[misc]
    """While this worker consumes, touch the heartbeat file of each kind of process it serves
    (see health.py); the timer runs on the loop that takes the jobs."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, consumer: Any, **kwargs: Any) -> None:
        super().__init__(consumer, **kwargs)
        self.heartbeats: list[health.Heartbeat] = []
        self.timer: Any = None

    def start(self, consumer: Any) -> None:
        queues = {queue.name for queue in consumer.task_consumer.queues}
        processes = consumer.app.conf.heartbeat_processes.items()
        self.heartbeats = [health.Heartbeat(p) for q, p in processes if q in queues]
        self.beat()
        interval = get_settings().worker_heartbeat_interval
        self.timer = consumer.timer.call_repeatedly(interval, self.beat)

    def stop(self, consumer: Any) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        for heartbeat in self.heartbeats:
            heartbeat.stop()

    shutdown = stop

    def beat(self) -> None:
        for heartbeat in self.heartbeats:
            heartbeat.beat()
