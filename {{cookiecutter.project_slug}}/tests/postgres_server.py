"""A PostgreSQL server of the test's own, on a free port, configured as the drill needs (few
connections, say), made with the server's own tools: `initdb` and `pg_ctl` from the PATH or from
Debian's /usr/lib/postgresql/<version>/bin. Run as root, they run as the `postgres` user, as
PostgreSQL refuses root. It starts in about a second, and lives in a temporary directory."""

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.processes import free_port


def _tool(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    assert found, f"this drill needs PostgreSQL's {name}"
    return found


@contextmanager
def running(**config: str) -> Iterator[str]:
    """A server with these settings (`max_connections="10"`); its URL, for the user postgres."""
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    directory = Path(tempfile.mkdtemp(prefix="postgres-"))
    data, port = directory / "data", free_port()
    if as_postgres:
        shutil.chown(directory, "postgres")
    initdb = [_tool("initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync"]
    subprocess.run([*as_postgres, *initdb], check=True, stdout=subprocess.DEVNULL)
    options = {"port": str(port), "listen_addresses": "127.0.0.1", "fsync": "off"}
    options |= {"unix_socket_directories": str(directory), **config}
    flags = " ".join(f"-c {name}={value}" for name, value in options.items())
    pg_ctl = [_tool("pg_ctl"), "-D", str(data), "-l", str(directory / "log"), "-s"]
    subprocess.run([*as_postgres, *pg_ctl, "-w", "-o", flags, "start"], check=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_postgres, *pg_ctl, "-m", "immediate", "stop"], check=False)
        shutil.rmtree(directory, ignore_errors=True)
