"""kombu's SQS transport, for Celery, which polls again after a failed request rather than stop.

`register()` makes `sqs://` URLs use it.
"""

import ipaddress
from typing import Any

from kombu.transport import SQS, TRANSPORT_ALIASES


class SQSChannel(SQS.Channel):
    def _on_messages_ready(self, queue: str, qname: str, messages: Any) -> int:
        # After a timeout or a 5xx answer (as when SQS cannot be reached) kombu's async client
        # gives [] where a response is expected, and kombu 5.7 fails on it ("'list' object has
        # no attribute 'get'"), then polls the queue no more: celery/kombu#1127.
        if not isinstance(messages, dict):
            return 0
        return int(super()._on_messages_ready(queue, qname, messages))  # type: ignore[no-untyped-call]


class SQSTransport(SQS.Transport):
    """kombu's SQS transport, which polls again after a failed request rather than stop."""

    Channel = SQSChannel


def register() -> None:
    """Make the broker URL's scheme name this transport, under kombu's own name."""
    TRANSPORT_ALIASES["sqs"] = f"{__name__}:SQSTransport"


def is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
