"""What each side measured, and the table comparing them: project against bare app."""

from typing import Any


def cell(project: dict[str, Any], bare: dict[str, Any], key: str, digits: int = 1) -> str:
    """The project's figure, the bare app's, and their ratio."""
    p, b = project.get(key), bare.get(key)
    if p is None or b is None:
        return "n/a"
    return f"{p:.{digits}f} (bare {b:.{digits}f}): {p / b:.2f}x" if b else f"{p:.{digits}f}"


def cpu_cell(project: dict[str, Any], bare: dict[str, Any], key: str) -> str:
    """CPU milliseconds per job on both sides, and what the project spends more (project - bare)."""
    p, b = project.get(key), bare.get(key)
    if p is None or b is None:
        return "n/a"
    return f"{p:.2f} (bare {b:.2f}): {p - b:+.2f} ms"


def losses(result: dict[str, Any]) -> str:
    pending = f", {result['pending']} pending" if result["pending"] else ""
    return f"{result['lost']}, {result['duplicated']}{pending}"


def rounded(value: Any) -> Any:
    """For printing: floats to one decimal, or two below 10 (CPU milliseconds per job)."""
    if isinstance(value, dict):
        return {key: rounded(item) for key, item in value.items()}
    if isinstance(value, float):
        return round(value, 2 if abs(value) < 10 else 1)
    return value


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| combination | email p50 ms | email p99 ms | POST /signups accepted/s | "
        "emails delivered/s | web CPU ms per signup | worker CPU ms per email | "
        "peak RSS web MB | peak RSS worker MB | lost, duplicated |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, sides in results.items():
        project, bare = sides.get("project", {}), sides.get("bare", {})
        failed = [f"{side}: {r['error']}" for side, r in sides.items() if "error" in r]
        if failed:
            lines.append(f"| {name} | failed: {'; '.join(failed)} |||||||||")
            continue
        rss = {
            kind: cell(
                {"mb": project["rss_mb"][kind]}, {"mb": bare["rss_mb"][kind]}, "mb", digits=0
            )
            for kind in ("web", "worker")
        }
        others = [f"{n} {mb:.0f}" for n, mb in project["rss_mb"].items() if n not in rss]
        extra = f" ({', '.join(others)})" if others else ""
        lines.append(
            f"| {name} | {cell(project, bare, 'p50')} | {cell(project, bare, 'p99')} "
            f"| {cell(project, bare, 'accepted_per_s', 0)} "
            f"| {cell(project, bare, 'delivered_per_s', 0)} "
            f"| {cpu_cell(project, bare, 'web_cpu_ms')} "
            f"| {cpu_cell(project, bare, 'worker_cpu_ms')} "
            f"| {rss['web']} | {rss['worker']}{extra} "
            f"| {losses(project)} (bare {losses(bare)}) |"
        )
    return "\n".join(lines)
