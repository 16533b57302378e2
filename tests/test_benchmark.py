"""The benchmark's plan (benchmarks/run.py), checked without running it: it is no test itself."""

import re

import pytest

from benchmarks.run import SEED, combination_name, plan, seed_commands
from tests.combinations import INVALID, VALID


def test_the_benchmark_names_and_measures_every_valid_combination() -> None:
    assert plan([]) == VALID
    assert [plan([combination_name(combo)]) for combo in VALID] == [[combo] for combo in VALID]


@pytest.mark.parametrize("name", [combination_name(INVALID[0]), "rq-fastapi-redis-sqlite"])
def test_the_benchmark_refuses_what_cannot_be_baked(name: str) -> None:
    with pytest.raises(SystemExit, match="not valid"):
        plan([name])


@pytest.mark.parametrize("combo", VALID, ids=combination_name)
def test_every_combination_has_its_bare_app(combo: dict[str, str]) -> None:
    for command in seed_commands(combo).values():
        module = re.search(r"(\w+)[:.](app|WorkerSettings)\b|-A (\w+)", command)
        assert module is not None, command
        name = module.group(1) or module.group(3)
        assert (SEED / f"{name}.py").is_file(), command
