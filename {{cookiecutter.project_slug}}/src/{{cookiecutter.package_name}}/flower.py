"""Flower, Celery's monitor, behind HTTP basic auth.

    python -m {{ cookiecutter.package_name }}.flower

Flower shows the workers, the tasks they run (from the workers' task events) and the queues, and
can control the workers (shut down, change pools, revoke tasks). It never starts open: without
`FLOWER_BASIC_AUTH` ("user:password", several separated by commas) it refuses to start, and
exits 2; under honcho it stays idle instead, so that `honcho start` runs the rest of the app.
Flower's own options follow on the command line or come from `FLOWER_*` variables
(`FLOWER_PORT`: 5555).
"""

import os
import sys

from . import idle, logs
from .settings import get_settings
from .worker import app


def main(argv: list[str]) -> int:
    credentials = get_settings().flower_basic_auth.get_secret_value()
    pairs = (pair.partition(":") for pair in credentials.split(","))
    if not all(user and password for user, _, password in pairs):
        refusal = "Flower refuses to start open to anyone: set FLOWER_BASIC_AUTH=user:password"
        if idle.under_honcho():
            logs.configure()
            return idle.wait(refusal)
        print(f"{refusal}.", file=sys.stderr)
        return 2
    os.environ["FLOWER_BASIC_AUTH"] = credentials  # Flower reads it there, also when set in .env
    logs.configure()
    return int(app.start(["flower", *argv]) or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
