"""kombu's Redis transport, for Celery, with what the project needs of it:

- a message that is not one (another program's, or garbled) is set aside on the DEAD_LETTERS
  list, with a log line, where kombu's would fail and stop the worker; the worker goes on with
  the next message;
- a channel closed after its connection was let go fails as a lost connection, which the worker
  rides out, not with AttributeError, which stopped it.

`register()` makes `redis://` and `rediss://` URLs use it.
"""

import json
from typing import Any

import structlog
from kombu.transport import TRANSPORT_ALIASES, redis
from redis.exceptions import ConnectionError as RedisConnectionError

logger = structlog.get_logger(__name__)
# Messages no worker can read, which RedisTransport sets aside here for someone to look at.
DEAD_LETTERS = "{{ cookiecutter.package_name }}.dead"


def _is_envelope(message: Any) -> bool:
    properties = message.get("properties") if isinstance(message, dict) else None
    return isinstance(properties, dict) and {"delivery_tag", "delivery_info"} <= properties.keys()


class RedisChannel(redis.Channel):
    def _brpop_read(self, **options: Any) -> bool:
        try:
            return bool(super()._brpop_read(**options))  # type: ignore[no-untyped-call]
        except ValueError as exc:  # json.JSONDecodeError: the message is not even JSON
            self.set_aside(getattr(exc, "doc", ""), "not JSON")
            return True

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        # When the network to Redis goes, Celery lets go of the transport, then closes the
        # channel again. If the first close stopped half way (the network was gone), the second
        # tries to put back the messages not yet acknowledged, which must connect anew, and there
        # was no address left to connect to. A lost connection instead: the worker reconnects,
        # and Redis puts those messages back after the visibility timeout.
        if self.connection.client is None:
            raise RedisConnectionError("the connection to Redis was already let go")
        return super()._connparams(asynchronous)  # type: ignore[no-untyped-call,no-any-return]

    def set_aside(self, text: str, reason: str, queue: str = "") -> None:
        logger.error(
            "poison message set aside", reason=reason, queue=queue or None, message=text[:500]
        )
        with self.conn_or_acquire() as client:
            client.lpush(DEAD_LETTERS, text)


class RedisTransport(redis.Transport):
    """kombu's Redis transport, which sets aside a message that is not one (another program's,
    or garbled) on the DEAD_LETTERS list, with a log line, where kombu's would fail and stop the
    worker; the worker goes on with the next message."""

    Channel = RedisChannel

    def _deliver(self, message: Any, queue: str) -> None:
        if _is_envelope(message):
            super()._deliver(message, queue)  # type: ignore[no-untyped-call]
        elif self.channels:
            text = message if isinstance(message, str) else json.dumps(message)
            self.channels[0].set_aside(text, "not a message", queue)


def register() -> None:
    """Make the broker URL's scheme name this transport, under kombu's own name."""
    ours = f"{__name__}:RedisTransport"
    TRANSPORT_ALIASES.update(redis=ours, rediss=ours)
