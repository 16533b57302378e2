"""The template's own repository has what it gives its projects: CI and pre-commit."""

import yaml

from tests.checks import check_jsonschema, run, tool
from tests.combinations import ROOT


def test_the_templates_ci_runs_the_verification_as_ci_run_does() -> None:
    workflow = ".github/workflows/ci.yml"
    check_jsonschema("vendor.github-workflows", ROOT / workflow)
    (job,) = yaml.safe_load((ROOT / workflow).read_text())["jobs"].values()
    assert [step["run"] for step in job["steps"] if "run" in step] == ["bash .ci/run"]
    assert {"redis", "rabbitmq", "postgres"} <= set(job["services"])
    command = "uv run pytest -n 4"  # the verification command, as the README gives it
    assert (ROOT / ".ci" / "run").read_text().rstrip().endswith(command)
    assert f"\n{command}\n" in (ROOT / "README.md").read_text()


def test_the_templates_pre_commit_configuration_is_valid() -> None:
    run([tool("pre-commit"), "validate-config", ".pre-commit-config.yaml"], ROOT)
    hooks = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())["repos"]
    assert {"ruff-check", "ruff-format"} <= {h["id"] for repo in hooks for h in repo["hooks"]}
