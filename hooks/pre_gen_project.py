"""Refuse answers that cannot make a working project, before anything is written."""

import json
import keyword
import re
import sys

QUEUE_BROKERS = {"celery": ("redis", "rabbitmq", "sqs"), "arq": ("redis",)}

# Top-level modules the generated project imports; a package of the same name would shadow them.
SHADOWED = {
    "alembic", "arq", "asyncio", "celery", "csv", "email", "fastapi", "flask", "gunicorn",
    "hashlib", "jinja2", "kombu", "logging", "PIL", "pydantic", "pydantic_settings", "pytest",
    "queue", "redis", "settings", "smtplib", "sqlalchemy", "starlette", "tests", "typing", "uvicorn",
}


def problems(answers: dict[str, str]) -> list[str]:
    queue, broker = answers["task_queue"], answers["broker"]
    package, slug = answers["package_name"], answers["project_slug"]
    found = []
    if broker not in QUEUE_BROKERS[queue]:
        others = ", ".join(QUEUE_BROKERS["celery"])
        found.append(
            f"{queue} cannot use the {broker} broker: ARQ needs Redis. "
            f"Choose broker=redis, or task_queue=celery, which offers {others}."
        )
    if not package.isidentifier() or not package.isascii():
        found.append(f"package_name {package!r} is not a valid Python identifier (letters, digits, _).")
    elif keyword.iskeyword(package) or keyword.issoftkeyword(package):
        found.append(f"package_name {package!r} is a Python keyword.")
    elif package in SHADOWED or package in sys.stdlib_module_names:
        found.append(f"package_name {package!r} would shadow the {package!r} module the project imports.")
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
