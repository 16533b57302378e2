"""Keep the files the answers chose, as cookiecutter.json's _manifest says; print the next steps."""

import json
import shutil
from pathlib import Path

ANSWERS = json.loads(r"""{{ cookiecutter | tojson }}""")


def apply_manifest(
    root: Path, manifest: dict[str, dict[str, list[str]]], answers: dict[str, str]
) -> None:
    """Delete the files of unchosen values; drop the `.value` infix from the chosen ones' names.

    A file listed under several values of an option stays if any of them is chosen.
    """
    for option, values in manifest.items():
        chosen = set(values.get(answers[option], []))
        for value, paths in values.items():
            for template in paths:
                path = root / template.format(package=answers["package_name"])
                if template not in chosen:
                    remove(path)
                elif f".{value}." in path.name:
                    path.rename(path.with_name(path.name.replace(f".{value}.", ".")))


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def next_steps(answers: dict[str, str]) -> str:
    return f"""
Created {answers["project_slug"]}/ ({answers["task_queue"]}, {answers["web_framework"]}, \
{answers["broker"]}, {answers["database"]}). Next:

    cd {answers["project_slug"]}
    uv sync && uv run pytest                   # set up and test
    cp .env.example .env                       # settings, and PORT=8000 for honcho
    uv run alembic upgrade head                # create the schema
    uv run honcho start                        # run the app: http://localhost:8000

README.md explains each job, how to try it by hand, and how it behaves when things fail.
"""


if __name__ == "__main__":
    apply_manifest(Path.cwd(), ANSWERS["_manifest"], ANSWERS)
    print(next_steps(ANSWERS))
