"""Each valid combination, verified for real: baked, clean, linted, type-checked, installed
from its own pyproject.toml, and its own test suite passing against real services."""

import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from tests import combinations
from tests.checks import (
    check_ci,
    check_docker,
    check_hygiene,
    check_kubernetes,
    check_layout,
    clean_env,
    finish,
    interpreter_workarounds,
    pythons_path,
    ruff,
    run,
    start,
    tool,
    uv,
)
from tests.combinations import COOKIECUTTER, FULL, VALID
from tests.conftest import Databases, TypeCheckCaches, broker_url, free_port
from tests.readme import walk_through

# The projects' long fault drills (tests marked `drill`) run once for each queue and broker.
DRILLS = combinations.one_per(("task_queue", "broker"), spread=("web_framework", "database"))
# The offline tier's test doubles differ by queue (Celery's in-memory transport, fakeredis for
# ARQ), not by framework, whose differences the API contract walk covers: run it once for each
# queue, on bakes that do not run the drills, to even out the load.
OFFLINE = combinations.one_per(
    ("task_queue",),
    spread=("web_framework", "broker", "database"),
    among=[plan for plan in FULL if plan not in DRILLS],
)
# The projects' browser test (a real headless Chromium) runs once for each web framework, on
# bakes that run neither the drills nor the offline tier; ARQ's, last in FULL, are offered first
# so that both queues get one.
BROWSER = combinations.one_per(
    ("web_framework",),
    spread=("task_queue", "broker", "database"),
    among=[plan for plan in reversed(FULL) if plan not in DRILLS and plan not in OFFLINE],
)
# The README followed as a person does, once per queue; pre-commit's own run, once: each on a
# bake that does nothing else beyond its own suite, to even out the load.
WALKS = combinations.one_per(
    ("task_queue",),
    spread=("web_framework", "broker", "database"),
    among=[plan for plan in FULL if plan not in DRILLS + OFFLINE + BROWSER],
)
PRE_COMMIT = next(p for p in FULL if p not in DRILLS + OFFLINE + BROWSER + WALKS)


# The longest bakes first, so that none of them is left running alone at the end.
ORDER = sorted(FULL, key=lambda plan: (plan not in DRILLS, plan not in OFFLINE + BROWSER))


@pytest.mark.parametrize("plan", ORDER, ids=combinations.plan_id)
def test_combination(
    cookies: Any,
    plan: dict[str, str],
    sqs_url: str,
    databases: Databases,
    type_check_caches: TypeCheckCaches,
) -> None:
    index = FULL.index(plan)
    result = cookies.bake(extra_context=combinations.context(plan, index))
    assert result.exit_code == 0, result.exception
    project: Path = result.project_path
    package = result.context["package_name"]

    started = time.monotonic()
    check_hygiene(project, plan)
    check_layout(project, package)
    check_docker(project, plan)
    check_kubernetes(project, plan)
    check_ci(project, plan)
    if plan is not PRE_COMMIT:
        ruff(project)

    # Its own environment, from its own pyproject.toml: first what it needs to run, then its tools.
    # The machine's default Python is older than the chosen one, which uv finds by itself, from
    # `.python-version`, without downloading one.
    assert (project / ".python-version").read_text() == f"{plan['python_version']}\n"
    env = clean_env(PATH=pythons_path(COOKIECUTTER["python_version"]))
    run([uv(), "sync", "--no-dev"], project, env)
    python = str(project / ".venv" / "bin" / "python")
    version = run([python, "-c", "import sys; print(*sys.version_info[:2], sep='.')"], project)
    assert version.strip() == plan["python_version"], version
    run([python, "-c", f"import {package}.web, {package}.worker"], project, env)
    env |= interpreter_workarounds(python)
    run([uv(), "sync"], project, env)
    installed = time.monotonic()
    # The type check runs while the tests, which mostly wait on workers and brokers, run too;
    # for one bake, pre-commit runs it, with ruff, as a developer's commit would.
    cache_key = f"{plan['python_version']}-{plan['task_queue']}"
    type_check_caches.seed(project, cache_key)
    if plan is PRE_COMMIT:
        mypy = pre_commit(project, env)
    else:
        mypy = start(
            [str(project / ".venv" / "bin" / "mypy"), "src", "tests", "benchmarks"], project, env
        )

    services = {"TEST_BROKER_URL": broker_url(plan["broker"], VALID.index(_axes(plan)), sqs_url)}
    if plan["database"] == "postgresql":
        services["TEST_DATABASE_URL"] = databases.create(f"{package}_test")
    counts = run_suite(project, env, services, drills=plan in DRILLS, browser=plan in BROWSER)
    assert counts == {**counts, "failures": 0, "errors": 0, "skipped": 0}, counts
    if plan in OFFLINE:
        # The suite as a newcomer first runs it: no services, test doubles instead.
        counts = run_suite(project, env, {}, drills=False, browser=False)
        assert counts == {**counts, "failures": 0, "errors": 0, "skipped": 0}, counts
    walked = time.monotonic()
    if plan in WALKS:
        settings = {"BROKER_URL": services["TEST_BROKER_URL"]}
        if plan["database"] == "postgresql":
            settings["DATABASE_URL"] = databases.create(f"{package}_readme")
        walk_through(project, env, settings, smtp_port=free_port())
    tested = time.monotonic()
    finish(mypy)
    type_check_caches.offer(project, cache_key)
    print(
        f"{combinations.plan_id(plan)}: install {installed - started:.0f}s, "
        f"tests {walked - installed:.0f}s, README {tested - walked:.0f}s, "
        f"then mypy {time.monotonic() - tested:.0f}s"
    )


def pre_commit(project: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """`pre-commit run --all-files` in the project made a git repository, as its README says."""
    env = {**env, "PRE_COMMIT_HOME": str(project.parent / "pre-commit-home")}
    run(["git", "init", "--quiet"], project, env)
    run(["git", "add", "--all"], project, env)
    return start([tool("pre-commit"), "run", "--all-files", "--show-diff-on-failure"], project, env)


def run_suite(
    project: Path,
    env: dict[str, str],
    services: dict[str, str],
    drills: bool = True,
    browser: bool = True,
) -> dict[str, int]:
    """Run the project's own tests (`uv run pytest`, as its README says), with its drills and
    browser test or not; count them from their JUnit report."""
    report = project / "report.xml"
    pytest_command = [uv(), "run", "pytest", "-p", "no:cacheprovider"]
    wanted = {"drill": drills, "browser": browser}
    if left_out := [f"not {marker}" for marker, run in wanted.items() if not run]:
        pytest_command += ["-m", " and ".join(left_out)]
    try:
        run([*pytest_command, f"--junitxml={report}"], project, {**env, **services})
    except AssertionError as failed:
        # What each failing test said first: the run's tail is mostly its captured logs.
        raise AssertionError(f"{failures(report)}\n{failed}") from None
    suite = ET.parse(report).getroot().find("testsuite")
    assert suite is not None
    counts = {key: int(suite.get(key, "0")) for key in ("tests", "failures", "errors", "skipped")}
    assert counts["tests"] > 0
    return counts


def failures(report: Path) -> str:
    """Each failing test of a JUnit report with the start of its message."""
    if not report.exists():
        return "(no test report)"
    lines = []
    for case in ET.parse(report).getroot().iter("testcase"):
        for failure in [*case.iter("failure"), *case.iter("error")]:
            message = failure.get("message", "")[:3000]
            lines.append(f"{case.get('classname')}::{case.get('name')}: {message}")
    return "\n".join(lines)


def _axes(plan: dict[str, str]) -> dict[str, str]:
    return {axis: plan[axis] for axis in combinations.AXES}
