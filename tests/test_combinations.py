"""Each valid combination, verified for real: baked, clean, linted, type-checked, installed
from its own pyproject.toml, and its own test suite passing against real services."""

import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from tests import combinations
from tests.checks import (
    check_docker,
    check_hygiene,
    clean_env,
    find_python,
    finish,
    ruff,
    run,
    start,
    uv,
)
from tests.combinations import FULL, VALID
from tests.conftest import Databases, broker_url

# The offline tier differs by queue and framework: run it once for each such pair too.
OFFLINE = combinations.first_per("task_queue", "web_framework")
# The projects' long fault drills (tests marked `drill`) run once for each queue and broker.
DRILLS = combinations.one_per(("task_queue", "broker"), spread=("web_framework", "database"))


@pytest.mark.parametrize("plan", FULL, ids=combinations.plan_id)
def test_combination(
    cookies: Any, plan: dict[str, str], sqs_url: str, databases: Databases
) -> None:
    index = FULL.index(plan)
    result = cookies.bake(extra_context=combinations.context(plan, index))
    assert result.exit_code == 0, result.exception
    project: Path = result.project_path
    package = result.context["package_name"]

    started = time.monotonic()
    check_hygiene(project, plan)
    check_docker(project, plan)
    ruff(project)

    # Its own environment, from its own pyproject.toml: first what it needs to run, then its tools.
    env = clean_env()
    run([uv(), "venv", "--python", find_python(plan["python_version"]), ".venv"], project, env)
    run([uv(), "sync", "--no-dev"], project, env)
    python = str(project / ".venv" / "bin" / "python")
    run([python, "-c", f"import {package}.web, {package}.worker"], project, env)
    run([uv(), "sync"], project, env)
    installed = time.monotonic()
    # The type check runs while the tests, which mostly wait on workers and brokers, run too.
    mypy_command = [str(project / ".venv" / "bin" / "mypy"), "src", "tests", "benchmarks"]
    mypy = start(mypy_command, project, env)

    services = {"TEST_BROKER_URL": broker_url(plan["broker"], VALID.index(_axes(plan)), sqs_url)}
    if plan["database"] == "postgresql":
        services["TEST_DATABASE_URL"] = databases.create(f"{package}_test")
    counts = run_suite(project, services, drills=plan in DRILLS)
    assert counts == {**counts, "failures": 0, "errors": 0, "skipped": 0}, counts
    if plan in OFFLINE:
        # The suite as a newcomer first runs it: no services, test doubles instead.
        counts = run_suite(project, {}, drills=False)
        assert counts == {**counts, "failures": 0, "errors": 0, "skipped": 1}, counts
    tested = time.monotonic()
    finish(mypy)
    print(
        f"{combinations.plan_id(plan)}: install {installed - started:.0f}s, "
        f"tests {tested - installed:.0f}s, then mypy {time.monotonic() - tested:.0f}s"
    )


def run_suite(project: Path, services: dict[str, str], drills: bool = True) -> dict[str, int]:
    """Run the project's own tests, its drills or not; count them from their JUnit report."""
    report = project / "report.xml"
    pytest_command = [str(project / ".venv" / "bin" / "pytest"), "-p", "no:cacheprovider"]
    if not drills:
        pytest_command += ["-m", "not drill"]
    run([*pytest_command, f"--junitxml={report}"], project, clean_env(**services))
    suite = ET.parse(report).getroot().find("testsuite")
    assert suite is not None
    counts = {key: int(suite.get(key, "0")) for key in ("tests", "failures", "errors", "skipped")}
    assert counts["tests"] > 0
    return counts


def _axes(plan: dict[str, str]) -> dict[str, str]:
    return {axis: plan[axis] for axis in combinations.AXES}
