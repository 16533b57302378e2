"""The generated project beside a bare seed-style app, measured in the same run.

    uv run python benchmarks/run.py [combination ...] [--template PATH] [--python 3.12]
                                    [--quick] [--smtp-delay MS] [--otlp]

A combination is named queue-framework-broker-database, e.g. `celery-fastapi-redis-sqlite`;
with none, every valid combination is measured (derived from cookiecutter.json, as the
verification derives them), or with `--quick` the four queue and framework pairs on Redis and
SQLite, with shorter phases. For each one this bakes the project from `--template` (this clone
by default, or any other clone or worktree), installs and migrates it, and starts its Procfile's
web and worker processes (sides.py). Then it measures, on the project and on the bare app of the
same queue, framework and broker (`seed/`), one after the other, alternating which goes first
(load.py): the welcome email's latency, POST /signups to the SMTP server (`smtp_sink.py`, which
answers at once or after `--smtp-delay` milliseconds, many messages at a time); the emails
delivered per second after a burst queued while the workers were paused, and the email
worker's CPU time per email; the signups accepted per second under `wrk` and the web process's
CPU time per signup; the peak resident memory of each process (processes.py); nothing lost,
nothing duplicated. With `--otlp`, the project's processes trace, exporting their spans over
OTLP/HTTP to a receiver of the run's own (`otlp_sink.py`), which counts the batches and bytes it
received (the bare app never traces); without it, tracing is off. It prints each side's
figures and a table comparing them (report.py), and exits 0 whatever the figures: it is a
measurement, not a test.

Services, as the verification finds them: REDIS_URL (a database of its own: it is emptied; without
it a private redis-server is started), RABBITMQ_URL (the queues made are deleted), POSTGRES_URL (a
database is made per combination and dropped); SQS is a moto_server started per combination.
"""

import argparse
import dataclasses
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.load import FULL, QUICK, Mailbox, Phases, measure  # noqa: E402
from benchmarks.otlp_sink import OtlpSink  # noqa: E402
from benchmarks.report import rounded, table  # noqa: E402
from benchmarks.sides import bake, services, sides  # noqa: E402
from tests.combinations import AXES, VALID  # noqa: E402

QUICK_COMBINATIONS = {"broker": "redis", "database": "sqlite"}


def combination_name(combo: dict[str, str]) -> str:
    return "-".join(combo[axis] for axis in AXES)


def plan(names: list[str], quick: bool = False) -> list[dict[str, str]]:
    """The combinations named, or every valid one (quick: those on Redis and SQLite); an
    unknown or invalid name is refused."""
    valid = {combination_name(combo): combo for combo in VALID}
    unknown = [name for name in names if name not in valid]
    if unknown:
        raise SystemExit(f"not valid combinations: {unknown}; choose among {sorted(valid)}")
    if names:
        return [valid[name] for name in names]
    if quick:
        return [c for c in VALID if QUICK_COMBINATIONS.items() <= c.items()]
    return list(VALID)


def bench(
    combo: dict[str, str],
    template: Path,
    python: str,
    first: str,
    phases: Phases,
    otlp: bool = False,
) -> dict[str, Any]:
    """Bake, install and measure one combination, both sides; `first` is the side run first.
    With `otlp`, the project's processes export their spans to a receiver of this run."""
    began = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix=f"bench-{combination_name(combo)}-"))
    project = bake(combo, template, python, work)
    print(f"    baked and installed in {time.monotonic() - began:.0f} s", flush=True)
    results: dict[str, Any] = {}
    with ExitStack() as stack:
        broker, database = stack.enter_context(services(combo, project, work))
        mailbox = Mailbox(work, phases.smtp_delay_ms)
        stack.callback(mailbox.stop)
        both = sides(combo, project, broker, database, mailbox.port, work)
        sink = stack.enter_context(OtlpSink()) if otlp else None
        if sink:
            tracing = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint}
            both["project"] = dataclasses.replace(
                both["project"], env=both["project"].env | tracing
            )
        for name in [first, *(side for side in both if side != first)]:
            side = both[name]
            try:
                results[name] = measure(
                    name, side.commands, side.cwd, side.env, mailbox, work / name, phases
                )
            except Exception as exc:
                results[name] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"    {name}: {json.dumps(rounded(results[name]))}", flush=True)
        if sink:  # the project's processes have stopped, their last spans flushed
            results["project"]["otlp"] = sink.counts()
            print(f"    OTLP receiver: {json.dumps(sink.counts())}", flush=True)
    if any("error" in result for result in results.values()):
        print(f"    logs kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("combinations", nargs="*", help="e.g. celery-fastapi-redis-sqlite")
    parser.add_argument("--template", type=Path, default=ROOT, help="the template to bake")
    parser.add_argument("--python", default="3.12", help="the projects' Python version")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="shorter phases; without combinations, the four on Redis and SQLite",
    )
    parser.add_argument(
        "--smtp-delay",
        type=int,
        default=0,
        metavar="MS",
        help="the SMTP server answers each message this many milliseconds later (default 0)",
    )
    parser.add_argument(
        "--otlp",
        action="store_true",
        help="the project traces, exporting its spans to an OTLP/HTTP receiver of the run's own",
    )
    args = parser.parse_args()
    combos = plan(args.combinations, args.quick)
    phases = dataclasses.replace(QUICK if args.quick else FULL, smtp_delay_ms=args.smtp_delay)
    # Stopped (even when started in the background, where SIGINT is ignored): clean up first.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda signum, _: sys.exit(f"stopped by signal {signum}"))
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: apt-get install wrk")
    started = time.monotonic()
    results = {}
    for index, combo in enumerate(combos):
        name = combination_name(combo)
        began = time.monotonic()
        print(f"{name}:", flush=True)
        first = "project" if index % 2 == 0 else "bare"
        try:
            template = args.template.resolve()
            results[name] = bench(combo, template, args.python, first, phases, args.otlp)
        except Exception as exc:
            results[name] = {"project": {"error": f"{type(exc).__name__}: {exc}"}}
        print(f"    {time.monotonic() - began:.0f} s", flush=True)
    mode = "quick phases" if args.quick else "full phases"
    smtp = f"SMTP answering after {args.smtp_delay} ms" if args.smtp_delay else "SMTP instant"
    tracing = "project tracing to an OTLP receiver" if args.otlp else "tracing off"
    print(
        f"\n{len(combos)} combinations in {(time.monotonic() - started) / 60:.1f} min, "
        f"{mode}, {smtp}, {tracing}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}\n"
    )
    print(table(results))


if __name__ == "__main__":
    main()
