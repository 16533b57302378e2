"""Configuration, read from environment variables and an optional `.env` file."""

from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import BeforeValidator, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

{%- if cookiecutter.broker == "redis" %}

DEFAULT_BROKER_URL = "redis://localhost:6379/0"
{%- elif cookiecutter.broker == "rabbitmq" %}

DEFAULT_BROKER_URL = "amqp://guest:guest@localhost:5672//"
{%- else %}

# A local SQS-compatible endpoint (moto_server or ElasticMQ); `sqs://` alone means AWS itself.
DEFAULT_BROKER_URL = "sqs://local:local@localhost:9324"
{%- endif %}


def _seconds(value: Any) -> Any:
    """Read "90" or "1.5" as seconds; leave ISO 8601 durations ("PT1H") to pydantic."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


Duration = Annotated[timedelta, BeforeValidator(_seconds)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    app_name: str = "{{ cookiecutter.project_name }}"
    database_url: str = "sqlite:///./{{ cookiecutter.package_name }}.db"
    broker_url: str = DEFAULT_BROKER_URL

    smtp_host: str = "localhost"
    smtp_port: int = 1025
    smtp_username: str = ""
    smtp_password: SecretStr = SecretStr("")
    smtp_starttls: bool = False
    smtp_timeout: float = Field(default=10.0, gt=0)
    mail_from: str = '"{{ cookiecutter.project_name }}" <noreply@example.com>'

    upload_dir: Path = Path("uploads")
    max_upload_bytes: int = Field(default=100 * 1024 * 1024, gt=0)

    cleanup_interval: Duration = timedelta(hours=1)
    retention: Duration = timedelta(days=7)

    # Every job: how often it may run, and the exponential backoff (seconds) between runs.
    job_max_attempts: int = Field(default=8, ge=1)
    retry_backoff: float = Field(default=2.0, gt=0)
    retry_backoff_max: float = Field(default=20.0, gt=0)
    # A running job whose worker has not reported for this long is presumed lost.
    job_lease: Duration = timedelta(seconds=20)
    # Hard time limits per kind of job, in seconds.
    email_timeout: int = Field(default=20, gt=0)
    file_timeout: int = Field(default=600, gt=0)
    cleanup_timeout: int = Field(default=20, gt=0)
{%- if cookiecutter.task_queue == "celery" and cookiecutter.broker != "rabbitmq" %}
    # Seconds until the broker hands an unacknowledged message to another worker.
    broker_visibility_timeout: int = Field(default=30, gt=0)
{%- endif %}
{%- if cookiecutter.broker == "sqs" %}
    # Plain HTTP to an SQS stand-in on another host, such as docker-compose.yml's moto
    # (a loopback endpoint always gets plain HTTP; any other, HTTPS unless this is set).
    sqs_plain_http: bool = False
{%- endif %}

    @model_validator(mode="after")
    def _check_timing(self) -> Self:
        if self.cleanup_interval <= timedelta(0) or self.retention < timedelta(0):
            raise ValueError("CLEANUP_INTERVAL must be positive and RETENTION not negative")
{%- if cookiecutter.task_queue == "celery" and cookiecutter.broker != "rabbitmq" %}
        # A delayed message held by a worker for longer than this would be delivered twice.
        longest_delay = max(self.retry_backoff_max, self.job_lease.total_seconds())
        if longest_delay >= self.broker_visibility_timeout:
            raise ValueError(
                "RETRY_BACKOFF_MAX and JOB_LEASE must be shorter than BROKER_VISIBILITY_TIMEOUT"
            )
{%- endif %}
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
