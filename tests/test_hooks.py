"""The answers the template refuses, and the guards that keep its test plan honest."""

import re
from pathlib import Path
from typing import Any

import pytest
from cookiecutter.exceptions import FailedHookException
from jinja2 import Template

from tests import combinations
from tests.checks import check_ci, check_docker, check_hygiene, check_kubernetes, ruff
from tests.combinations import COOKIECUTTER, EXTRA, FULL, INVALID, ROOT, VALID


def test_the_validity_rule_speaks_of_the_choices_cookiecutter_json_offers() -> None:
    rule = combinations.PRE_GEN.QUEUE_BROKERS
    assert set(rule) == set(COOKIECUTTER["task_queue"])
    for brokers in rule.values():
        assert set(brokers) <= set(COOKIECUTTER["broker"])
    assert len(VALID) + len(INVALID) == len(combinations.ALL)


def test_the_readme_states_the_real_number_of_combinations() -> None:
    readme = (ROOT / "README.md").read_text()
    assert f"{len(VALID)} valid combinations" in readme
    assert f"{len(INVALID)} invalid ones" in readme


def test_every_pair_of_option_values_is_baked() -> None:
    baked = set().union(*map(combinations.pairs, FULL + EXTRA))
    assert combinations.possible_pairs() <= baked
    for option in combinations.OPTIONS:
        assert {plan[option] for plan in FULL + EXTRA} == set(combinations.choices(option))


def values_of(option: str) -> set[str]:
    """An option's choices; for a value derived from them (`__name`), every value it takes."""
    if option.startswith("__"):
        return {Template(COOKIECUTTER[option]).render(cookiecutter=combo) for combo in VALID}
    return set(COOKIECUTTER[option])


def test_the_manifest_names_every_variant_file_and_only_real_ones() -> None:
    template = ROOT / "{{cookiecutter.project_slug}}"
    listed = set()
    for option, values in COOKIECUTTER["_manifest"].items():
        assert set(values) <= values_of(option), option
        for paths in values.values():
            for path in paths:
                real = template / path.format(package="{{cookiecutter.package_name}}")
                assert real.exists(), real
                listed.add(real)
    infixes = {f".{v}." for option in COOKIECUTTER["_manifest"] for v in values_of(option)}
    variants = {p for p in template.rglob("*") if any(i in p.name for i in infixes)}
    assert variants <= listed


def test_the_web_variants_hold_no_queue_branch() -> None:
    """Each web framework's file routes and translates HTTP; the queue is behind `worker.Client`
    and the use cases in `service.py`, so neither web variant may branch on the queue."""
    package = ROOT / "{{cookiecutter.project_slug}}" / "src" / "{{cookiecutter.package_name}}"
    for web in package.glob("web.*.py"):
        assert not re.search(r"task_queue|\bcelery\b|\barq\b", web.read_text(), re.I), web.name


def refused(result: Any, capfd: pytest.CaptureFixture[str], tmp_path: Path) -> str:
    """The hook's message, once sure the bake failed and left nothing in its output folder."""
    assert result.exit_code != 0
    assert isinstance(result.exception, FailedHookException)
    (output,) = (tmp_path / "cookies").iterdir()
    assert list(output.iterdir()) == [], "a refused bake left files behind"
    return capfd.readouterr().err


@pytest.mark.parametrize("combo", INVALID, ids=combinations.plan_id)
def test_invalid_combinations_are_refused_with_the_reason(
    cookies: Any, capfd: pytest.CaptureFixture[str], tmp_path: Path, combo: dict[str, str]
) -> None:
    message = refused(cookies.bake(extra_context=combo), capfd, tmp_path)
    assert f"broker={combo['broker']}" in message
    assert "ARQ needs Redis" in message
    assert "redis, rabbitmq, sqs" in message


@pytest.mark.parametrize(
    ("answers", "reason"),
    [
        ({"package_name": "class"}, "is a Python keyword"),
        ({"package_name": "celery"}, "would shadow the 'celery' module"),
        ({"package_name": "email"}, "would shadow the 'email' module"),
        ({"package_name": "my-app"}, "not a valid Python identifier"),
        ({"project_name": "2048 Jobs"}, "not a valid Python identifier"),
        ({"project_slug": "Bad Slug!"}, "not a valid folder and distribution name"),
        ({"project_name": 'The "Best" App'}, "may not contain double quotes"),
    ],
)
def test_bad_names_are_refused_with_the_reason(
    cookies: Any,
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
    answers: dict[str, str],
    reason: str,
) -> None:
    assert reason in refused(cookies.bake(extra_context=answers), capfd, tmp_path)


@pytest.mark.parametrize("plan", EXTRA, ids=combinations.plan_id)
def test_extra_bakes_for_pairwise_coverage_are_clean(cookies: Any, plan: dict[str, str]) -> None:
    number = 100 + EXTRA.index(plan)
    result = cookies.bake(extra_context=combinations.context(plan, number))
    assert result.exit_code == 0, result.exception
    check_hygiene(result.project_path, plan)
    check_docker(result.project_path, plan)
    check_kubernetes(result.project_path, plan)
    check_ci(result.project_path, plan)
    ruff(result.project_path)


def test_the_defaults_bake_and_print_the_next_steps(
    cookies: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    result = cookies.bake()
    assert result.exit_code == 0, result.exception
    assert result.project_path.name == "task-queue-app"
    assert "uv run pytest" in capfd.readouterr().out
