"""gunicorn's settings for the web process, wherever it runs and whatever the working directory:
the Procfile, the Docker image and Kubernetes all start gunicorn with
`--config python:{{ cookiecutter.package_name }}.gunicorn_config`.

Options given on the command line win over these, e.g. `--bind 127.0.0.1:8000`.
"""

import os

# On all interfaces, on the port a platform (or honcho) hands over in PORT.
bind = [f"0.0.0.0:{os.environ.get('PORT', '8000')}"]
# Processes: about one per core the web server may use.
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
# Threads per process: a slow request, or a browser's idle connection, holds one thread only.
threads = 8
# Each process's heartbeat file, touched several times a second: on a memory filesystem where
# there is one, and anyway not on the read-only root filesystem of a container.
SHARED_MEMORY = "/dev/shm"  # noqa: S108 - a memory filesystem, for gunicorn's own files only
worker_tmp_dir = SHARED_MEMORY if os.path.isdir(SHARED_MEMORY) else None
# On SIGTERM, requests under way get this long to finish: less than the 30 s that Docker and
# Kubernetes wait before they kill the process.
graceful_timeout = 25
# One line per request, in the app's own log format (logs.py takes gunicorn's access log over).
accesslog = "-"
# No control socket for gunicornc: nothing here uses it, and it would be a file in $HOME,
# shared by every gunicorn of a user and not writable in the container.
control_socket_disable = True
