"""Every bake the verification makes, derived from cookiecutter.json and the pre-generation hook.

A new choice in cookiecutter.json shows up here by itself: as new combinations of the four axes,
or as values that the pairwise plan spreads over the bakes.
"""

import importlib.util
import itertools
import json
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
COOKIECUTTER: dict[str, Any] = json.loads((ROOT / "cookiecutter.json").read_text())
AXES = ("task_queue", "web_framework", "broker", "database")

# Free-text answers, as people type them: plain, or with spaces and accents.
NAMES = {
    "plain": {"project_name": "Task Queue {n}"},
    "unicode": {
        "project_name": "Café Crème Jobs {n}",
        "author_name": "Zoë Ångström",
        "description": "Tâches de fond, vérifiées",
    },
}


def _load_hook(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "hooks" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PRE_GEN = _load_hook("pre_gen_project")


def is_valid(combo: dict[str, str]) -> bool:
    """The one validity rule: the hook's own table of the brokers each queue supports."""
    return combo["broker"] in PRE_GEN.QUEUE_BROKERS[combo["task_queue"]]


def choices(option: str) -> list[str]:
    return list(NAMES) if option == "names" else list(COOKIECUTTER[option])


ALL = [dict(zip(AXES, values, strict=True)) for values in itertools.product(*map(choices, AXES))]
VALID = [combo for combo in ALL if is_valid(combo)]
INVALID = [combo for combo in ALL if not is_valid(combo)]

# Every other multiple-choice question, and the style of the free-text answers.
OTHERS = [
    *(k for k, v in COOKIECUTTER.items() if isinstance(v, list) and k not in AXES and k[0] != "_"),
    "names",
]
OPTIONS = [*AXES, *OTHERS]


def _spread(index: int) -> dict[str, str]:
    """Values of the other options for the index-th valid combination, cycling through each."""
    spread, stride = {}, 1
    for option in OTHERS:
        values = choices(option)
        spread[option] = values[(index // stride) % len(values)]
        stride *= len(values)
    return spread


# The 16 valid combinations, each verified in full; the other options spread among them.
FULL = [{**combo, **_spread(i)} for i, combo in enumerate(VALID)]


def first_per(*options: str) -> list[dict[str, str]]:
    """The first full bake for each combination of values of `options`."""
    first: dict[tuple[str, ...], dict[str, str]] = {}
    for plan in FULL:
        first.setdefault(tuple(plan[option] for option in options), plan)
    return list(first.values())


def one_per(
    options: tuple[str, ...],
    spread: tuple[str, ...],
    among: list[dict[str, str]] | None = None,
) -> list[dict[str, str]]:
    """One full bake (of `among`, by default all) for each combination of values of `options`,
    chosen so that the values of `spread` each come up about as often as the others."""
    plans = FULL if among is None else among
    seen: dict[tuple[str, str], int] = dict.fromkeys(
        ((option, value) for option in spread for value in choices(option)), 0
    )
    chosen: dict[tuple[str, ...], dict[str, str]] = {}
    for plan in plans:
        key = tuple(plan[option] for option in options)
        if key in chosen:
            continue
        group = [p for p in plans if tuple(p[option] for option in options) == key]
        best = min(group, key=lambda p: sum(seen[(option, p[option])] for option in spread))
        for option in spread:
            seen[(option, best[option])] += 1
        chosen[key] = best
    return list(chosen.values())


def pairs(plan: dict[str, str]) -> set[tuple[tuple[str, str], tuple[str, str]]]:
    items = sorted(plan.items())
    return set(itertools.combinations(items, 2))


def possible_pairs() -> set[tuple[tuple[str, str], tuple[str, str]]]:
    """Every pair of values of two options that some valid bake can show."""
    found = set()
    for combo in VALID:
        for others in itertools.product(*map(choices, OTHERS)):
            found |= pairs({**combo, **dict(zip(OTHERS, others, strict=True))})
    return found


def _extra_plans() -> list[dict[str, str]]:
    """Greedily add bakes (checked for hygiene and lint) until every possible pair is baked."""
    missing = possible_pairs() - set().union(*map(pairs, FULL))
    extra = []
    candidates = [
        {**combo, **dict(zip(OTHERS, others, strict=True))}
        for combo in VALID
        for others in itertools.product(*map(choices, OTHERS))
    ]
    while missing:
        best = max(candidates, key=lambda plan: len(pairs(plan) & missing))
        extra.append(best)
        missing -= pairs(best)
    return extra


EXTRA = _extra_plans()


def plan_id(plan: dict[str, str]) -> str:
    return "-".join(plan[option] for option in OPTIONS if option in plan)


def context(plan: dict[str, str], number: int) -> dict[str, str]:
    """The extra_context for cookiecutter: the plan's choices and its names, made unique."""
    answers = {key: value for key, value in plan.items() if key != "names"}
    names = {key: text.format(n=number) for key, text in NAMES[plan["names"]].items()}
    return {**answers, **names}
