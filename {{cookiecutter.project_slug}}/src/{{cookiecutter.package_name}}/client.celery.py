"""The web app's side of the queue (see service.Queue): this process's Celery app, which its
settings configured when it was imported, publishes the jobs; the broker is pinged, and its
queues measured, on connections of their own."""

from . import worker
from .models import Job
from .settings import Settings

QUEUE, FILE_QUEUE, QUEUES = worker.QUEUE, worker.FILE_QUEUE, worker.QUEUES


class Client:
    def __init__(self, app_settings: Settings) -> None:
        pass

    def publish(self, job: Job) -> bool:
        worker.enqueue(job)
        return True

    def ping(self) -> None:
        """Raise if the broker does not answer within a few seconds."""
        with worker.app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=3)
            connection.default_channel  # noqa: B018 - opening a channel talks to the broker

    def depths(self) -> dict[str, int]:
        return worker.queue_depths()

    def close(self) -> None:
        pass
