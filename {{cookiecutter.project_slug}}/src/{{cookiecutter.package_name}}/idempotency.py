"""Idempotency keys, after the IETF draft "The Idempotency-Key HTTP Header Field": a request
sent again with the same `Idempotency-Key` is answered as the first one was, and changes nothing.

A key belongs to one route and one request, identified by its fingerprint (a SHA-256). The first
request with a key reserves it by inserting its row: the database's primary key lets one request
in, whichever web process it reached. It stores its answer once it has one, and the key then
answers every request that repeats it, until IDEMPOTENCY_TTL has passed. The same key with
another request is refused (422), and so is a repeat while the first is still under way (409). A
request that fails (the queue or the database is down) gives its key back, so that it can
be sent again. A key still under way after RESERVATION_TIMEOUT belongs to a request that died.
"""

import hashlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .api import Accepted, Refused
from .database import utcnow
from .models import IdempotencyKey

logger = structlog.get_logger(__name__)

HEADER = "Idempotency-Key"
MAX_LENGTH = 255
# Far longer than a request takes once its body is read: the reservation covers recording its
# jobs (which waits DATABASE_POOL_TIMEOUT at worst) and handing them to the queue (seconds).
RESERVATION_TIMEOUT = timedelta(minutes=5)

ANSWERED = 202  # what both routes answer once they have queued their jobs

Sessions = Callable[[], AbstractContextManager[Session]]


class Conflict(Exception):
    """The key cannot be used for this request: the HTTP status that says why, and a message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Request:
    key: str
    route: str
    fingerprint: str


def parse(value: str | None) -> str | None:
    """The key a header value names (a Structured Fields string, or the same text unquoted);
    None without the header. Refused (400) if it is empty or too long."""
    if value is None:
        return None
    key = value.strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not key or len(key) > MAX_LENGTH or not key.isprintable():
        raise Refused(400, f"the {HEADER} header must be 1 to {MAX_LENGTH} printable characters")
    return key


def fingerprint(*parts: str) -> str:
    """The SHA-256 of what identifies a request, each part length-prefixed (so no two lists of
    parts give the same text)."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode()
        digest.update(f"{len(data)}:".encode() + data)
    return digest.hexdigest()


def once(
    sessions: Sessions,
    request: Request | None,
    ttl: timedelta,
    act: Callable[[], Accepted],
    undo: Callable[[], None] = lambda: None,
) -> Accepted:
    """`act`'s answer; or, without running it, the answer the first request with this key got.
    Conflict if the key cannot be used for this request. `undo` is called unless `act` ran and
    answered."""
    try:
        if request is None:
            return act()
        stored = reserve(sessions, request, ttl)
        if stored is not None:
            replay = Accepted.model_validate(stored)
            logger.info("request answered again", idempotency_key=request.key, route=request.route)
            undo()
            return replay
        try:
            answer = act()
        except BaseException:
            _quietly(release, sessions, request)  # so that the request can be sent again
            raise
    except BaseException:
        undo()
        raise
    _quietly(complete, sessions, request, ANSWERED, answer.model_dump(mode="json"))
    return answer


def reserve(sessions: Sessions, request: Request, ttl: timedelta) -> dict[str, Any] | None:
    """Reserve the key for this request (None: go ahead), or the answer the first request with
    it got. Conflict if the key was used for another request, or its first request is still
    under way."""
    for _ in range(3):  # a key given back between the insert and the read is tried again
        now = utcnow()
        the_key = (IdempotencyKey.key == request.key) & (IdempotencyKey.route == request.route)
        abandoned = (IdempotencyKey.status_code.is_(None)) & (
            IdempotencyKey.created_at < now - RESERVATION_TIMEOUT
        )
        try:
            with sessions() as db:
                expired = or_(IdempotencyKey.expires_at <= now, abandoned)
                db.execute(delete(IdempotencyKey).where(the_key, expired))
                db.execute(
                    insert(IdempotencyKey).values(
                        key=request.key,
                        route=request.route,
                        fingerprint=request.fingerprint,
                        created_at=now,
                        expires_at=now + ttl,
                    )
                )
            return None
        except IntegrityError:
            pass  # the key is taken: by this request, another one, or this one still under way
        with sessions() as db:
            found = db.scalars(select(IdempotencyKey).where(the_key)).one_or_none()
        if found is None:
            continue
        if found.fingerprint != request.fingerprint:
            raise Conflict(422, f"this {HEADER} was used for another request")
        if found.status_code is None or found.response is None:
            raise Conflict(409, f"a request with this {HEADER} is still under way")
        return dict(found.response)
    raise Conflict(409, f"a request with this {HEADER} is still under way")


def complete(sessions: Sessions, request: Request, status: int, response: dict[str, Any]) -> None:
    """Keep the answer for the requests that repeat this one (the first answer stays)."""
    with sessions() as db:
        db.execute(
            update(IdempotencyKey)
            .where(
                IdempotencyKey.key == request.key,
                IdempotencyKey.route == request.route,
                IdempotencyKey.status_code.is_(None),
            )
            .values(status_code=status, response=response)
        )


def release(sessions: Sessions, request: Request) -> None:
    """Give the key back after its request failed, so the request can be sent again."""
    with sessions() as db:
        db.execute(
            delete(IdempotencyKey).where(
                IdempotencyKey.key == request.key,
                IdempotencyKey.route == request.route,
                IdempotencyKey.status_code.is_(None),
            )
        )


def _quietly(write: Callable[..., None], *args: Any) -> None:
    """A write the answer does not depend on: if the database fails it, a key still under way is
    free again after RESERVATION_TIMEOUT."""
    try:
        write(*args)
    except Exception as exc:
        logger.warning("idempotency key not updated", error=f"{type(exc).__name__}: {exc}")
