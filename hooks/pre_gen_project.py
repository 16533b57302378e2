"""Refuse answers that cannot make a working project, before anything is written."""

import json
import keyword
import re
import sys

QUEUE_BROKERS = {"celery": ("redis", "rabbitmq", "sqs"), "arq": ("redis",)}

# Third-party modules the generated project imports (the standard library's are checked too).
# fmt: off
SHADOWED = {
    "alembic", "aiosmtpd", "arq", "boto3", "celery", "fakeredis", "fastapi", "flask", "gunicorn",
    "honcho", "jinja2", "kombu", "moto", "PIL", "psycopg", "pydantic", "pydantic_settings",
    "pytest", "redis", "sqlalchemy", "starlette", "tests", "uvicorn", "werkzeug",
}
# fmt: on


# Free-text answers are written into Python, TOML and .env files as quoted strings.
TEXT_ANSWERS = ("project_name", "description", "author_name", "author_email")


def problems(answers: dict[str, str]) -> list[str]:
    queue, broker = answers["task_queue"], answers["broker"]
    package, slug = answers["package_name"], answers["project_slug"]
    found = [
        f"{key} {answers[key]!r} may not contain double quotes, backslashes or line breaks."
        for key in TEXT_ANSWERS
        if any(char in answers[key] for char in '"\\\n\r')
    ]
    if broker not in QUEUE_BROKERS[queue]:
        others = ", ".join(QUEUE_BROKERS["celery"])
        found.append(
            f"task_queue={queue} cannot use broker={broker}: ARQ needs Redis. "
            f"Choose broker=redis, or task_queue=celery, which offers {others}."
        )
    if not package.isidentifier() or not package.isascii():
        found.append(
            f"package_name {package!r} is not a valid Python identifier (letters, digits, _)."
        )
    elif keyword.iskeyword(package) or keyword.issoftkeyword(package):
        found.append(f"package_name {package!r} is a Python keyword.")
    elif package in SHADOWED or package in sys.stdlib_module_names:
        found.append(
            f"package_name {package!r} would shadow the {package!r} module the project imports."
        )
    if not re.fullmatch(r"[a-z0-9]+(?:[-_.][a-z0-9]+)*", slug):
        found.append(
            f"project_slug {slug!r} is not a valid folder and distribution name "
            "(lowercase ASCII letters and digits, separated by single '-', '_' or '.')."
        )
    return found


if __name__ == "__main__":
    errors = problems(json.loads(r"""{{ cookiecutter | tojson }}"""))
    for error in errors:
        print(f"ERROR: {error}", file=sys.stderr)
    sys.exit(1 if errors else 0)
