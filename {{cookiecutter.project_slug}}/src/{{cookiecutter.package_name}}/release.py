"""The Procfile's release step: bring the database schema up to date (`alembic upgrade head`).

    python -m {{ cookiecutter.package_name }}.release

A platform runs it once per deploy, before the new processes start, and goes on once it has
exited (0) or stops the deploy (anything else); `docker-compose.yml` and Kubernetes (a Job) do
the same. Under honcho, which stops every process when one exits, it then stays idle: so
`honcho start` migrates and runs the app.
"""

import sys

from alembic.config import main as alembic

from . import idle, logs


def main() -> int:
    alembic(argv=["upgrade", "head"])  # exits with the reason if a migration fails
    if idle.under_honcho():
        logs.configure()
        return idle.wait("the database schema is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
