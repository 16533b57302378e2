"""Alembic's entry point: migrate the database named by DATABASE_URL."""

from logging.config import fileConfig

from alembic import context

from {{ cookiecutter.package_name }} import models  # noqa: F401 - registers the tables
from {{ cookiecutter.package_name }}.database import Base, engine

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name)


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Leave alone the tables pyrate-limiter keeps for the webhook rate limits."""
    return not (type_ == "table" and name is not None and name.startswith("ratelimit___"))


with engine().connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        include_name=include_name,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
