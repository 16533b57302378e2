"""Print the top-level packages that a project's modules import, one per line:

    python tests/list_imports.py PROJECT

Run by the Python the project is written for (see `checks.imports`), which parses its syntax.
"""

import ast
import sys
from pathlib import Path


def imported(project: Path) -> set[str]:
    found = set()
    for path in project.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


if __name__ == "__main__":
    print(*sorted(imported(Path(sys.argv[1]))), sep="\n")
