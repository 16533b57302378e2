"""What every baked project must show, whatever its options."""

import atexit
import contextlib
import functools
import glob
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml
from check_jsonschema import main as check_jsonschema_main
from cloudcoil.models.keda import v1alpha1 as keda

from tests.combinations import COOKIECUTTER
from tests.pod_security import pod_template, violations

# Modules and distributions that belong to one value of an option, and to no project without it.
MARKERS = {
    ("task_queue", "celery"): {"celery", "kombu", "flower"},
    ("task_queue", "arq"): {"arq", "fakeredis"},
    ("web_framework", "fastapi"): {"fastapi", "starlette", "uvicorn", "httpx2"},
    ("web_framework", "flask"): {
        "flask",
        "werkzeug",
        "gunicorn",
        "opentelemetry-instrumentation-flask",
    },
    ("broker", "redis"): {"celery[redis]"},
    ("broker", "sqs"): {"boto3", "botocore", "moto", "celery[sqs]", "moto[server,sqs]"},
    ("database", "postgresql"): {
        "psycopg",
        "psycopg_pool",
        "psycopg[binary]",
        "psycopg[binary,pool]",
    },
    ("database", "sqlite"): {"filelock"},
}
JINJA = re.compile(r"{{|{%|{#|cookiecutter", re.IGNORECASE)
# GitHub's workflows have expressions of their own, `${{ ... }}`: allowed there, and only there.
JINJA_IN_GITHUB = re.compile(r"(?<!\$){{|{%|{#|cookiecutter", re.IGNORECASE)


def text_files(project: Path) -> list[Path]:
    return [p for p in project.rglob("*") if p.is_file() and ".venv" not in p.parts]


def check_hygiene(project: Path, answers: dict[str, str]) -> None:
    """No template artefacts, and nothing of the options that were not chosen."""
    verbatim = COOKIECUTTER["_copy_without_render"]  # the project's own Jinja templates
    for path in text_files(project):
        if any(path.match(pattern) for pattern in verbatim):
            continue
        text = path.read_text()
        jinja = JINJA_IN_GITHUB if ".github" in path.relative_to(project).parts else JINJA
        assert not jinja.search(text), f"template artefact in {path}: {jinja.search(text)}"
    manifest = COOKIECUTTER["_manifest"]
    for values in manifest.values():
        for value in values:
            suffix = f".{value}."
            leftovers = [p for p in text_files(project) if suffix in p.name]
            assert not leftovers, f"variant files left: {leftovers}"
    imported = imports(project, answers["python_version"])
    pyproject = (project / "pyproject.toml").read_text()
    required = re.findall(r'^\s+"([a-z0-9_.,\[\]-]+?)[<>=~!]', pyproject, re.MULTILINE)
    dependencies = {*required, *(name.partition("[")[0] for name in required)}
    for (option, value), markers in MARKERS.items():
        if answers[option] != value:
            unchosen = (markers & imported) | (markers & dependencies)
            assert not unchosen, f"{option}={answers[option]} still uses {unchosen}"


def imports(project: Path, python_version: str) -> set[str]:
    """The top-level packages the project's modules import, read by the Python they are written
    for: a newer one's syntax (`class once[T]`) is not this one's."""
    script = Path(__file__).with_name("list_imports.py")
    command = [find_python(python_version), str(script), str(project)]
    return set(subprocess.run(command, capture_output=True, text=True, check=True).stdout.split())


# No module of the generated package is longer than this: each one concern, on a few screens.
MODULE_LINES = 250


def check_layout(project: Path, package: str) -> None:
    """Every module of the package fits on a few screens."""
    for module in (project / "src" / package).rglob("*.py"):
        lines = len(module.read_text().splitlines())
        assert lines <= MODULE_LINES, f"{module.name} has {lines} lines (at most {MODULE_LINES})"


def check_docker(project: Path, answers: dict[str, str]) -> None:
    """With Docker: hadolint and docker-compose accept the files; compose runs the Procfile's
    commands, each process healthy-checked and waiting for healthy services, after `migrate`."""
    if answers["use_docker"] == "no":
        assert not (project / "Dockerfile").exists()
        return
    dockerfile = (project / "Dockerfile").read_text().replace("\\\n", " ")
    assert f"FROM python:{answers['python_version']}-slim" in dockerfile
    assert re.search(r"^HEALTHCHECK .*/health", dockerfile, re.MULTILINE)
    run([tool("hadolint"), "--failure-threshold", "warning", "Dockerfile"], project)
    run([tool("docker-compose"), "--file", "docker-compose.yml", "config", "--quiet"], project)

    services = yaml.safe_load((project / "docker-compose.yml").read_text())["services"]
    package = next(path.name for path in (project / "src").iterdir() if path.is_dir())
    processes = procfile(project)
    for name, words in processes.items():
        service = services["migrate" if name == "release" else name]
        if name != "web":
            assert service["command"][: len(words)] == words, (name, service["command"])
    # The web service runs the image's CMD: the Procfile's, but for a port that comes from $PORT.
    (cmd,) = re.findall(r"^CMD (\[.*\])$", dockerfile, re.MULTILINE)
    if "$" not in " ".join(processes["web"]):
        assert yaml.safe_load(cmd) == processes["web"], (cmd, processes["web"])
        if name in ("worker", "file_worker"):
            probe = ["CMD", "python", "-m", f"{package}.health", name]
            assert service["healthcheck"]["test"] == probe, (name, service["healthcheck"])
    for name, service in services.items():
        if name == "migrate":
            assert service["healthcheck"] == {"disable": True}
            continue
        assert service["healthcheck"]["test"][0] == "CMD", name
        for needed, condition in service.get("depends_on", {}).items():
            ready = "service_completed_successfully" if needed == "migrate" else "service_healthy"
            assert condition == {"condition": ready}, (name, needed, condition)
        if name in processes:
            # Every process waits for the migration and for each service its settings name.
            urls = " ".join(map(str, service["environment"].values()))
            hosts = {host for host in services if re.search(rf"[@/]{host}[:/]", urls)}
            hosts |= {service["environment"]["SMTP_HOST"], "migrate"}
            assert set(service["depends_on"]) == hosts, (name, service["depends_on"], hosts)
    if answers["broker"] == "redis":
        command = " ".join(services["redis"]["command"])
        assert "--appendonly yes" in command and "--maxmemory-policy noeviction" in command
    if answers["broker"] == "rabbitmq":
        settings = (project / "src" / package / "settings.py").read_text()
        limits = re.findall(r"^\s+\w+_timeout: int = Field\(default=(\d+)", settings, re.MULTILINE)
        options = services["rabbitmq"]["environment"]["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"]
        consumer_timeout = int(re.findall(r"consumer_timeout (\d+)", options)[0])
        assert consumer_timeout > 1000 * max(map(int, limits)), (consumer_timeout, limits)


def check_ci(project: Path, answers: dict[str, str]) -> None:
    """The CI workflow and Dependabot's file fit GitHub's schemas; the workflow lints, type-checks
    and tests against the chosen services; pre-commit accepts its configuration."""
    workflow_path, dependabot_path = ".github/workflows/ci.yml", ".github/dependabot.yml"
    check_jsonschema("vendor.github-workflows", project / workflow_path)
    check_jsonschema("vendor.dependabot", project / dependabot_path)
    run([tool("pre-commit"), "validate-config", ".pre-commit-config.yaml"], project)

    (job,) = yaml.safe_load((project / workflow_path).read_text())["jobs"].values()
    steps = " ".join(step.get("run", "") for step in job["steps"])
    for command in ("uv sync --locked", "ruff check", "ruff format --check", "mypy", "pytest"):
        assert command in steps, command
    scheme = {"redis": "redis://", "rabbitmq": "amqp://", "sqs": "sqs://"}[answers["broker"]]
    assert job["env"]["TEST_BROKER_URL"].startswith(scheme)
    assert answers["broker"] in job["services"]
    assert ("postgres" in job["services"]) == (answers["database"] == "postgresql")
    assert ("TEST_DATABASE_URL" in job["env"]) == (answers["database"] == "postgresql")
    updates = yaml.safe_load((project / dependabot_path).read_text())["updates"]
    assert {"uv", "github-actions"} <= {update["package-ecosystem"] for update in updates}
    hooks = yaml.safe_load((project / ".pre-commit-config.yaml").read_text())["repos"]
    assert {"ruff-check", "ruff-format", "mypy"} <= {h["id"] for r in hooks for h in r["hooks"]}


def check_jsonschema(schema: str, path: Path) -> None:
    """`check-jsonschema --builtin-schema SCHEMA PATH`, run in this process: starting it is
    most of its time."""
    output = io.StringIO()
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        code = check_jsonschema_main(["--builtin-schema", schema, str(path)], standalone_mode=False)
    assert code == 0, f"{path} does not fit {schema}:\n{output.getvalue()}"


def tool(name: str) -> str:
    """A command-line tool: the template's dev dependency, or (docker-compose) the system's."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert found, f"{name} is missing: install the template's dev dependencies (.ci/run does)"
    return found


# The Kubernetes version whose schemas the deploy files must satisfy (kubernetes-validate ships it).
KUBERNETES_VERSION = "1.33.0"
KEDA_KINDS = {kind.__name__: kind for kind in (keda.ScaledObject, keda.TriggerAuthentication)}


def procfile(project: Path) -> dict[str, list[str]]:
    """The Procfile's processes and their command words, up to a `--schedule` file's path."""
    processes = {}
    for line in (project / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        words = shlex.split(command)
        processes[name] = words[: words.index("--schedule")] if "--schedule" in words else words
    return processes


def check_kubernetes(project: Path, answers: dict[str, str]) -> None:
    """The Kubernetes files satisfy the schemas of Kubernetes and of KEDA's resources, run the
    Procfile's commands, and scale Deployments that exist. Every pod meets the restricted Pod
    Security Standard, with a read-only root filesystem, the app's pods as the image's own user.
    With SQLite, one replica of each process on one node, and no autoscaling."""
    documents = [
        document
        for path in sorted((project / "deploy" / "kubernetes").glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
        if document
    ]
    for document in documents:
        if document["apiVersion"].startswith("keda.sh/"):
            model = KEDA_KINDS[document["kind"]].model_validate(document)
            # The models ignore fields they do not know: what they keep must be all there is.
            kept = model.model_dump(mode="json", by_alias=True, exclude_unset=True)
            assert kept == document, f"{document['kind']}: fields that KEDA does not know"
        else:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    commands, deployments = {}, set()
    for document in documents:
        if document["kind"] in ("Deployment", "Job"):
            component = document["metadata"]["labels"]["app.kubernetes.io/component"]
            (container,) = document["spec"]["template"]["spec"]["containers"]
            commands[component] = container["command"]
        if document["kind"] == "Deployment":
            deployments.add(document["metadata"]["name"])
    processes = {"release", "web", "worker", "file_worker"}
    if answers["task_queue"] == "celery":
        processes.add("scheduler")
    else:
        assert "scheduler" not in commands, "ARQ's workers carry the schedule: no scheduler"
    assert processes <= commands.keys(), f"no Deployment or Job for {processes - commands.keys()}"
    for name, words in procfile(project).items():
        if "$" in " ".join(words):  # a port that comes from $PORT: Kubernetes names its own
            continue
        if name in commands:
            assert commands[name][: len(words)] == words, (name, commands[name])
    for document in documents:
        if document["kind"] == "ScaledObject":
            assert document["spec"]["scaleTargetRef"]["name"] in deployments
    check_pods(project, answers, documents)


def check_pods(project: Path, answers: dict[str, str], documents: list[dict[str, Any]]) -> None:
    """Pod security, and what SQLite allows: one node, one replica, no autoscaling."""
    slug = project.name
    dockerfile = project / "Dockerfile"
    image_user = None
    if dockerfile.exists():
        (image_user,) = re.findall(r"^USER (\d+)", dockerfile.read_text(), re.MULTILINE)
    sqlite = answers["database"] == "sqlite"
    for document in documents:
        pod = pod_template(document)
        if pod is None:
            continue
        name = document["metadata"]["name"]
        assert not violations(pod), f"{name} breaks the restricted Pod Security Standard: " + (
            "; ".join(violations(pod))
        )
        spec = pod["spec"]
        for container in spec["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
            if container["image"].startswith(f"{slug}:") and image_user:
                assert str(spec["securityContext"]["runAsUser"]) == image_user, name
                assert str(spec["securityContext"]["runAsGroup"]) == image_user, name
        if document["kind"] == "Deployment" and sqlite and "persistentVolumeClaim" in str(spec):
            assert document["spec"]["replicas"] == 1, f"{name}: SQLite allows one replica"
            affinity = spec["affinity"]["podAffinity"][
                "requiredDuringSchedulingIgnoredDuringExecution"
            ]
            assert affinity[0]["topologyKey"] == "kubernetes.io/hostname", name
    kinds = {document["kind"] for document in documents}
    claims = [d for d in documents if d["kind"] == "PersistentVolumeClaim"]
    modes = {mode for claim in claims for mode in claim["spec"]["accessModes"]}
    if sqlite:
        assert "ScaledObject" not in kinds, "SQLite: no autoscaling, one replica only"
        assert modes == {"ReadWriteOnce"}, modes
    else:
        assert "ScaledObject" in kinds and modes == {"ReadWriteMany"}, (kinds, modes)


def find_python(version: str) -> str:
    """An interpreter for `version`: installed by pyenv, or on PATH (not a pyenv shim)."""
    pattern = os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python")
    candidates = sorted(glob.glob(pattern))
    found = shutil.which(f"python{version}")
    if found and "/shims/" not in found:
        candidates.append(found)
    assert candidates, f"no Python {version} on this machine: install it to verify these bakes"
    return candidates[-1]


def uv() -> str:
    return tool("uv")


def pythons_path(versions: list[str]) -> str:
    """PATH on a machine whose default Python is the oldest supported one, with the others after
    it, newest first: uv must pick the chosen version from `.python-version`, not the first
    interpreter that satisfies `requires-python`. uv itself comes first, alone in its folder."""
    oldest, *others = sorted(versions, key=lambda v: tuple(map(int, v.split("."))))
    pythons = [str(Path(find_python(v)).parent) for v in [oldest, *reversed(others)]]
    return os.pathsep.join([_uv_alone(), *pythons, os.environ["PATH"]])


@functools.cache
def _uv_alone() -> str:
    folder = Path(tempfile.mkdtemp(prefix="uv-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    (folder / "uv").symlink_to(uv())
    return str(folder)


def run(
    command: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 900
) -> str:
    """Run a command; fail the test with its output if it fails."""
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, (
        f"{' '.join(command)} failed ({result.returncode}):\n{output[-6000:]}"
    )
    return output


def start(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """Start a command in the background; `finish` checks it."""
    return subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(process: subprocess.Popen[str], timeout: float = 900) -> None:
    output, _ = process.communicate(timeout=timeout)
    command = " ".join(map(str, process.args))  # type: ignore[arg-type]
    assert process.returncode == 0, f"{command} failed ({process.returncode}):\n{output[-6000:]}"


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the template's virtualenv, for a project's own tools.

    Bytecode is written: each test suite starts several Python processes (workers, a web server),
    and recompiling their imports in every one of them would double the verification's time.
    """
    skip = {"VIRTUAL_ENV", "PYTHONPATH", "UV_PROJECT_ENVIRONMENT", "PYTHONDONTWRITEBYTECODE"}
    env = {key: value for key, value in os.environ.items() if key not in skip}
    return {**env, "UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1", **extra}


def interpreter_workarounds(python: str) -> dict[str, str]:
    """Environment for a project's processes that keeps clear of a known bug of `python`.

    CPython 3.11 before 3.11.8 (this machine's pyenv has 3.11.7; uv downloads no other here) may
    raise `SystemError: AST constructor recursion depth mismatch` when threads parse source at
    once (gh-106905), and its tracebacks parse their lines to place their carets: seen in the
    worker threads of a bake's suite. Without column positions, tracebacks parse nothing.
    """
    command = [python, "-c", "import sys; print(sys.version_info[:3] < (3, 11, 8))"]
    if subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip() == "True":
        return {"PYTHONNODEBUGRANGES": "1"}
    return {}


def ruff(project: Path) -> None:
    tool = shutil.which("ruff", path=str(Path(sys.executable).parent)) or "ruff"
    run([tool, "check", "--no-cache", "."], project)
    run([tool, "format", "--no-cache", "--check", "."], project)
