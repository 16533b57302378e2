"""The SQLAlchemy engine and sessions, one engine per process."""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import URL, DateTime, Engine, create_engine, event, make_url, text
from sqlalchemy.orm import DeclarativeBase, Session
from sqlalchemy.types import TypeDecorator

from .settings import get_settings


class Base(DeclarativeBase):
    pass


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every database."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC).replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def engine_url(database_url: str) -> URL:
    """Accept `postgres://` and `postgresql://` as platforms hand them out; use psycopg 3."""
    url = make_url(database_url)
    if url.drivername in {"postgres", "postgresql"}:
        url = url.set(drivername="postgresql+psycopg")
    return url


@lru_cache
def engine() -> Engine:
    url = engine_url(get_settings().database_url)
    if url.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 5})
    created = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(created, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        # WAL lets the web process read while a worker writes. With synchronous=NORMAL a commit
        # no longer waits for the disk: a power cut may lose the last commits, never corrupt the
        # file; a process crash loses nothing.
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return created


@contextmanager
def session() -> Iterator[Session]:
    """A session whose work is committed on success and rolled back on error."""
    with Session(engine(), expire_on_commit=False) as db, db.begin():
        yield db


def ping() -> None:
    with engine().connect() as connection:
        connection.execute(text("SELECT 1"))
