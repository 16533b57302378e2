"""Notify the configured endpoint of an event, signed as the Standard Webhooks specification says.

Every attempt carries the same `webhook-id` (the job's id), so a receiver can drop repeats, and a
fresh `webhook-timestamp`; `webhook-signature` is `v1,` and the base64 HMAC-SHA256 of
`{id}.{timestamp}.{body}` under the secret. Any Standard Webhooks or Svix library verifies it.

The endpoint is called only on an address `addresses.refusal` accepts: the name is resolved once,
every address it gives is checked, and the connection goes to the checked address (the Host
header and TLS still use the name), so a DNS answer that changes between check and call cannot
lead the worker into the private network.

Each call has WEBHOOK_TIMEOUT seconds in all, from connecting to the last byte of the answer read.

Every error has a `summary`, short and free of the endpoint's answer, fit to show whoever asked
for the work; `str()` of it is the full detail, for operators.
"""

import base64
import hashlib
import hmac
import ipaddress
import json
import random
import socket
import threading
import time
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import SplitResult, urlsplit

import httpx

from . import addresses, ratelimit
from .deadlines import Deadline
from .once import once
from .settings import get_settings

EXCERPT_CHARS = 200


class DeliveryError(Exception):
    """The endpoint did not take the event now; sending it again later may work.

    `summary` is short and public, `detail` (and `str()`) the whole story; `retry_after` is the
    wait in seconds the endpoint asked for, if it asked.
    """

    def __init__(self, summary: str, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.summary = summary
        self.detail = detail
        self.retry_after = retry_after


class DeliveryRefused(Exception):
    """The event cannot go to this endpoint: sending it again will not help.

    `summary` is short and public, `detail` (and `str()`) the whole story.
    """

    def __init__(self, summary: str, detail: str) -> None:
        super().__init__(detail)
        self.summary = summary
        self.detail = detail


class Throttled(Exception):
    """This worker may not call the endpoint now; in `delay` seconds it may."""

    def __init__(self, delay: float, reason: str) -> None:
        super().__init__(reason)
        self.summary = self.detail = reason
        self.delay = delay


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header for one attempt."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def deliver(message_id: str, event: dict[str, Any]) -> dict[str, Any]:
    """POST `event` to WEBHOOK_URL once; the endpoint's answer if it took it (2xx)."""
    settings = get_settings()
    url = urlsplit(settings.webhook_url)
    host = url.hostname
    if not host:
        raise DeliveryRefused("webhooks are off", "WEBHOOK_URL is no longer set")
    address = resolve(host, url.port or (443 if url.scheme == "https" else 80))
    slots = _call_slots(settings.webhook_concurrency)
    if not slots.acquire(timeout=1):
        raise Throttled(_later(0), "too many calls at once in this worker")
    try:
        try:
            wait = ratelimit.wait_for_turn(host)
        except Exception as exc:  # whatever its store raises: Redis or database errors
            summary = "the rate limit could not be checked"
            raise DeliveryError(summary, f"{summary}: {exc!r}") from exc
        if wait > 0:
            raise Throttled(_later(wait), f"rate limit for {host}")
        return _post(url, address, message_id, event)
    finally:
        slots.release()


def resolve(host: str, port: int) -> str:
    """The address to connect to; refused unless public or its host is allowed."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        detail = f"cannot resolve {host}: {exc}"
        raise DeliveryError("the endpoint's name did not resolve", detail) from exc
    found_addresses = [str(info[4][0]) for info in found]
    allowed = host in get_settings().webhook_allowed_hosts
    for address in found_addresses:
        reason = addresses.refusal(ipaddress.ip_address(address.partition("%")[0]), allowed)
        if reason:
            raise DeliveryRefused(
                "the endpoint's address is not allowed", f"{host} resolves to {address}, {reason}"
            )
    return found_addresses[0]


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header: a number of seconds, or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _post(url: SplitResult, address: str, message_id: str, event: dict[str, Any]) -> dict[str, Any]:
    settings = get_settings()
    body = json.dumps(event, separators=(",", ":")).encode()
    timestamp = int(time.time())
    secret = settings.webhook_secret.get_secret_value()
    headers = {
        "Host": url.netloc.rpartition("@")[2],
        "Content-Type": "application/json",
        "User-Agent": f"{_ascii(settings.app_name)} webhooks",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, message_id, timestamp, body),
    }
    pinned = f"[{address}]" if ":" in address else address
    target = url._replace(netloc=f"{pinned}:{url.port}" if url.port else pinned).geturl()
    connect = min(settings.webhook_connect_timeout, settings.webhook_timeout)
    timeout = httpx.Timeout(
        connect=connect,
        read=settings.webhook_read_timeout,
        write=settings.webhook_read_timeout,
        pool=connect,
    )
    # No proxies from the environment: the call must go to the address that was checked.
    with (
        httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client,
        Deadline(settings.webhook_timeout) as deadline,
    ):
        try:
            with client.stream(
                "POST",
                target,
                content=body,
                headers=headers,
                extensions={"sni_hostname": url.hostname, "trace": _watcher(deadline)},
            ) as response:
                excerpt = _excerpt(response, settings.webhook_max_response_bytes)
        except httpx.TransportError as exc:
            if deadline.expired:
                raise _late(url, deadline) from exc
            if isinstance(exc, httpx.TimeoutException):
                summary, detail = "the endpoint timed out", f"timed out: {type(exc).__name__}"
            else:
                summary, detail = "the endpoint was unreachable", f"unreachable: {exc!r}"
            raise DeliveryError(summary, f"{url.hostname} {detail}") from exc
        if deadline.expired:  # an answer without a length ends where the deadline cut it
            raise _late(url, deadline)
    status = response.status_code
    summary, detail = f"the endpoint answered HTTP {status}", f"HTTP {status}: {excerpt}"
    if 200 <= status < 300:
        return {"status_code": status, "response": excerpt}
    if status in {408, 429} or status >= 500:
        raise DeliveryError(summary, detail, retry_after(response.headers.get("Retry-After")))
    raise DeliveryRefused(summary, detail)


def _watcher(deadline: Deadline) -> Callable[[str, dict[str, Any]], None]:
    """An httpcore trace hook that gives `deadline` each socket the call opens."""

    def trace(event: str, info: dict[str, Any]) -> None:
        if event in {"connection.connect_tcp.complete", "connection.start_tls.complete"}:
            deadline.watch(info["return_value"].get_extra_info("socket"))

    return trace


def _late(url: SplitResult, deadline: Deadline) -> DeliveryError:
    return DeliveryError(
        "the endpoint timed out",
        f"{url.hostname} did not answer in full within WEBHOOK_TIMEOUT ({deadline.seconds:g} s)",
    )


def _excerpt(response: httpx.Response, limit: int) -> str:
    """The start of the body, reading no more than `limit` bytes of it."""
    received = bytearray()
    for chunk in response.iter_bytes():
        received += chunk
        if len(received) >= limit:
            break
    text = " ".join(received[:limit].decode(errors="replace").split())
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1] + "…"


def _ascii(text: str) -> str:
    """Header values are ASCII: "Café" becomes "Cafe"."""
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()


@once
def _call_slots(concurrency: int) -> threading.BoundedSemaphore:
    """Calls under way at once in this process, at most `concurrency`."""
    return threading.BoundedSemaphore(concurrency)


def _later(wait: float) -> float:
    """`wait`, and a random part of half RETRY_BACKOFF_MAX: jobs held back by a burst spread out
    over that time rather than all come back for the next turn, and again for the one after."""
    return wait + random.uniform(0, get_settings().retry_backoff_max / 2)
