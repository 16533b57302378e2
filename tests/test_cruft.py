"""Template updates, as the README tells users to take them: a project made with `cruft create`
is up to date by `cruft check`, and `cruft update` brings in a later template commit cleanly,
next to the project's own changes."""

import json
import os
import shutil
import subprocess
from pathlib import Path

from tests.checks import run, tool
from tests.combinations import ROOT

IDENTITY = {
    "GIT_AUTHOR_NAME": "Verification",
    "GIT_AUTHOR_EMAIL": "verification@example.com",
    "GIT_COMMITTER_NAME": "Verification",
    "GIT_COMMITTER_EMAIL": "verification@example.com",
}
ENV = {**os.environ, **IDENTITY, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}


def commit(repository: Path, message: str) -> None:
    run(["git", "add", "--all"], repository, ENV)
    run(["git", "commit", "--quiet", "--message", message], repository, ENV)


def test_cruft_creates_checks_and_updates_a_project(tmp_path: Path) -> None:
    # A temporary copy of the template, as a git repository with a first commit.
    template = tmp_path / "template"
    ignored = shutil.ignore_patterns(".git", ".venv", "__pycache__", ".*_cache", "uv.lock")
    shutil.copytree(ROOT, template, ignore=ignored)
    run(["git", "init", "--quiet"], template, ENV)
    commit(template, "The template as it is")

    cruft = tool("cruft")
    answers = {"task_queue": "arq", "web_framework": "flask", "use_docker": "no"}
    create = [cruft, "create", str(template), "--no-input", "--output-dir", str(tmp_path / "out")]
    run([*create, "--extra-context", json.dumps(answers)], tmp_path, ENV)
    project = tmp_path / "out" / "task-queue-app"
    link = json.loads((project / ".cruft.json").read_text())
    assert link["context"]["cookiecutter"]["task_queue"] == "arq"
    run(["git", "init", "--quiet"], project, ENV)
    commit(project, "Generated")
    run([cruft, "check"], project, ENV)

    # The project's own change, and a later change of the template elsewhere in the same file.
    readme = project / "README.md"
    readme.write_text(readme.read_text().replace("\n", "\n\nOur team's notes.\n", 1))
    commit(project, "Our notes")
    template_readme = template / "{{cookiecutter.project_slug}}" / "README.md"
    template_readme.write_text(template_readme.read_text() + "\n## Changelog\n\nNew section.\n")
    commit(template, "A later template change")

    stale = subprocess.run([cruft, "check"], cwd=project, env=ENV, capture_output=True, check=False)
    assert stale.returncode != 0, "cruft check missed the template's new commit"
    run([cruft, "update", "--skip-apply-ask"], project, ENV)
    updated = readme.read_text()
    assert "Our team's notes." in updated
    assert updated.endswith("\n## Changelog\n\nNew section.\n")
    assert not list(project.rglob("*.rej")), "cruft update left rejected hunks"
    run([cruft, "check"], project, ENV)
