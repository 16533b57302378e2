"""Configuration, read from environment variables and an optional `.env` file."""

import base64
import tempfile
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

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


def _comma_separated(value: Any) -> Any:
    """Read "a.example, b.example" as a list of lowercase names."""
    if isinstance(value, str):
        return [part.strip().lower() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    app_name: str = "{{ cookiecutter.project_name }}"
    database_url: str = "sqlite:///./{{ cookiecutter.package_name }}.db"
    # Connections each process may hold (see README, "Connection budget"); a thread that finds
    # them all in use waits up to DATABASE_POOL_TIMEOUT seconds for one.
    database_pool_size: int = Field(default=5, ge=1)
    database_max_overflow: int = Field(default=0, ge=0)
    # Short: a job's thread gives its slot back and the job waits in the queue (no attempt spent)
    # rather than block, and a request answers 503 within seconds.
    database_pool_timeout: float = Field(default=5.0, gt=0)
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
    # How long a request's Idempotency-Key is kept: a repeat within it gets the first answer.
    idempotency_ttl: Duration = timedelta(hours=24)

    # Every job: how often it may run, and the exponential backoff (seconds) between runs.
    job_max_attempts: int = Field(default=8, ge=1)
    retry_backoff: float = Field(default=2.0, gt=0)
    retry_backoff_max: float = Field(default=20.0, gt=0)
    # A running job whose run has not renewed its lease for this long is presumed lost, and taken
    # over. Runs renew it every JOB_LEASE / 6, so a database outage shorter than JOB_LEASE * 5/6
    # never runs a job twice (see README, "Reliability").
    job_lease: Duration = timedelta(seconds=90)
    # Hard time limits per kind of job, in seconds.
    email_timeout: int = Field(default=20, gt=0)
    file_timeout: int = Field(default=600, gt=0)
    cleanup_timeout: int = Field(default=20, gt=0)
{%- if cookiecutter.task_queue == "celery" and cookiecutter.broker != "rabbitmq" %}
    # Seconds until the broker hands an unacknowledged message to another worker.
    broker_visibility_timeout: int = Field(default=30, gt=0)
{%- endif %}
    # A job not started this long after it was due is presumed lost by the broker and published
    # again: far longer than any redelivery or lease above, so an ordinary one never looks lost.
    stuck_job_after: Duration = timedelta(minutes=5)
    # The jobs dashboard and retries: HTTP basic auth; without both, they answer 404.
    dashboard_username: str = ""
    dashboard_password: SecretStr = SecretStr("")
    # GET /metrics: for `Authorization: Bearer <METRICS_TOKEN>` only; without a token, 404. Each
    # web process reads the figures at most once per METRICS_CACHE_SECONDS (0: at every scrape).
    metrics_token: SecretStr = SecretStr("")
    metrics_cache_seconds: float = Field(default=10.0, ge=0)
    # Logs: "console" (readable) or "json" (one object a line, for a log collector).
    log_format: Literal["console", "json"] = "console"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
{%- if cookiecutter.task_queue == "arq" %}
    # Seconds a worker told to stop (SIGTERM) waits for its running jobs before handing them back.
    shutdown_wait: int = Field(default=25, gt=0)
{%- elif cookiecutter.broker != "sqs" %}
    # Flower's HTTP basic auth, "user:password"; Flower refuses to start without it.
    flower_basic_auth: SecretStr = SecretStr("")
{%- endif %}

    # Signup webhooks (Standard Webhooks), off while WEBHOOK_URL is empty. The secret is
    # `whsec_` and base64; hosts in WEBHOOK_ALLOWED_HOSTS may resolve to private addresses.
    webhook_url: str = ""
    webhook_secret: SecretStr = SecretStr("")
    webhook_allowed_hosts: Annotated[list[str], NoDecode, BeforeValidator(_comma_separated)] = []
    webhook_connect_timeout: float = Field(default=5.0, gt=0)
    webhook_read_timeout: float = Field(default=10.0, gt=0)
    webhook_max_response_bytes: int = Field(default=64 * 1024, gt=0)
    # Calls per destination host per period, shared by every worker; calls at once per process.
    webhook_rate_limit: int = Field(default=10, gt=0)
    webhook_rate_period: float = Field(default=1.0, gt=0)
    webhook_concurrency: int = Field(default=8, gt=0)
    webhook_timeout: int = Field(default=20, gt=0)

    # Each worker touches a heartbeat file here this often; health.py reads it.
    worker_heartbeat_dir: Path = Path(tempfile.gettempdir())
    worker_heartbeat_interval: float = Field(default=5.0, gt=0)
{%- if cookiecutter.broker == "sqs" %}
    # Plain HTTP to an SQS stand-in on another host, such as docker-compose.yml's moto
    # (a loopback endpoint always gets plain HTTP; any other, HTTPS unless this is set).
    sqs_plain_http: bool = False
{%- endif %}

    @field_validator("webhook_url")
    @classmethod
    def _check_webhook_url(cls, value: str) -> str:
        url = urlsplit(value)
        if value and (url.scheme not in {"http", "https"} or not url.hostname):
            raise ValueError("WEBHOOK_URL must be an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _check_timing(self) -> Self:
        if self.cleanup_interval <= timedelta(0) or self.retention < timedelta(0):
            raise ValueError("CLEANUP_INTERVAL must be positive and RETENTION not negative")
        if self.idempotency_ttl <= timedelta(0):
            raise ValueError("IDEMPOTENCY_TTL must be positive")
        if self.stuck_job_after < timedelta(seconds=2) or self.stuck_job_after <= self.job_lease:
            raise ValueError("STUCK_JOB_AFTER must be at least 2 s and longer than JOB_LEASE")
        if self.webhook_url and not _is_webhook_secret(self.webhook_secret.get_secret_value()):
            raise ValueError("WEBHOOK_SECRET must be whsec_ and 24 to 64 bytes in base64")
{%- if cookiecutter.task_queue == "celery" and cookiecutter.broker != "rabbitmq" %}
        # A delayed message held by a worker for longer than this would be delivered twice.
        if self.retry_backoff_max >= self.broker_visibility_timeout:
            raise ValueError("RETRY_BACKOFF_MAX must be shorter than BROKER_VISIBILITY_TIMEOUT")
        # The broker hands a message back after its visibility timeout: that job is not lost.
        if self.stuck_job_after.total_seconds() <= self.broker_visibility_timeout:
            raise ValueError("STUCK_JOB_AFTER must be longer than BROKER_VISIBILITY_TIMEOUT")
{%- endif %}
        return self

    @model_validator(mode="after")
    def _check_dashboard(self) -> Self:
        if bool(self.dashboard_username) != bool(self.dashboard_password.get_secret_value()):
            raise ValueError("set both DASHBOARD_USERNAME and DASHBOARD_PASSWORD, or neither")
        return self


def _is_webhook_secret(secret: str) -> bool:
    prefix, _, key = secret.partition("_")
    try:
        return prefix == "whsec" and 24 <= len(base64.b64decode(key, validate=True)) <= 64
    except ValueError:
        return False


@lru_cache
def get_settings() -> Settings:
    return Settings()
