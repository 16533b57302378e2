"""The SQLAlchemy engine and sessions: one engine per database and process."""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import URL, Connection, DateTime, Engine, create_engine, event, make_url, text
from sqlalchemy.orm import DeclarativeBase, Session
from sqlalchemy.types import TypeDecorator

from . import tracing
from .once import once
from .settings import Settings, get_settings

# Where Core statements run: a plain connection's transaction (`transaction`) or a session's.
Db = Connection | Session


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


def engine(settings: Settings | None = None) -> Engine:
    """The engine for the settings' database (this process's settings by default)."""
    settings = settings or get_settings()
    pool = (settings.database_pool_size, settings.database_max_overflow)
    return _engine(settings.database_url, *pool, settings.database_pool_timeout)


@once
def _engine(database_url: str, pool_size: int, max_overflow: int, pool_timeout: float) -> Engine:
    url = engine_url(database_url)
    # Each process holds at most pool_size + max_overflow connections; a thread that finds
    # them all in use waits up to pool_timeout for one (see README, "Database connections").
    pool = {"pool_size": pool_size, "max_overflow": max_overflow, "pool_timeout": pool_timeout}
    if url.get_backend_name() != "sqlite":
        # No server-side prepared statements: behind PgBouncer in transaction pooling, the next
        # transaction may run on another server connection, which lacks them or has its own.
        connect_args = {"connect_timeout": 5, "prepare_threshold": None}
        created = create_engine(url, pool_pre_ping=True, connect_args=connect_args, **pool)
        return tracing.trace_sql(created)
    created = create_engine(url, connect_args={"timeout": 30}, **pool)

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

    return tracing.trace_sql(created)


@contextmanager
def session(bind: Engine | None = None) -> Iterator[Session]:
    """A transaction, committed on success and rolled back on error (this process's database
    by default)."""
    with Session(bind or engine(), expire_on_commit=False) as db, db.begin():
        yield db


@contextmanager
def transaction(bind: Engine | None = None) -> Iterator[Connection]:
    """A transaction on a plain connection, for Core statements only (a worker's claim and
    outcomes): cheaper than a session, which tracks objects such work never loads."""
    with (bind or engine()).begin() as connection:
        yield connection


def ping(bind: Engine | None = None) -> None:
    with (bind or engine()).connect() as connection:
        connection.execute(text("SELECT 1"))
