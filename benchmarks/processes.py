"""One side's long-running processes, each in a process group of its own, and what they use.

CPU time and resident memory are read from `/proc/<pid>/stat` for every process of a group (the
process started and its children: a prefork pool, gunicorn's workers). A group's CPU time is the
user and system time of its live members plus that of the children they have reaped, so that a
child which exits mid-phase still counts.
"""

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
SAMPLE_INTERVAL = 0.2  # seconds between two samples of the resident memory


def group_usage(groups: set[int]) -> dict[int, tuple[float, int]]:
    """For each process group: CPU seconds used so far (user + system), resident bytes now."""
    ticks = dict.fromkeys(groups, 0)
    pages = dict.fromkeys(groups, 0)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                line = stat.read()
        except OSError:
            continue  # exited meanwhile
        # After the command's name, in parentheses: field 3 (state) onwards, see proc(5).
        fields = line.rpartition(b")")[2].split()
        group = int(fields[2])  # field 5, pgrp
        if group in ticks:
            ticks[group] += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
            pages[group] += int(fields[21])  # field 24, rss
    return {group: (ticks[group] / CLOCK_TICKS, pages[group] * PAGE_SIZE) for group in groups}


class Processes:
    """Commands started by name, each as the leader of a new process group."""

    def __init__(self, commands: dict[str, str], cwd: Path, env: dict[str, str], logs: Path):
        self.logs = logs
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        for name, command in commands.items():
            self.running[name] = subprocess.Popen(
                ["/bin/sh", "-c", f"exec {command}"],
                cwd=cwd,
                env=env,
                stdout=(logs / f"{name}.log").open("wb"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.peak_mb = dict.fromkeys(commands, 0.0)
        self.stopped = threading.Event()
        self.sampler = threading.Thread(target=self._sample, daemon=True)
        self.sampler.start()

    def _sample(self) -> None:
        groups = {process.pid: name for name, process in self.running.items()}
        while not self.stopped.wait(SAMPLE_INTERVAL):
            for group, (_, resident) in group_usage(set(groups)).items():
                name = groups[group]
                self.peak_mb[name] = max(self.peak_mb[name], resident / 2**20)

    def cpu_seconds(self, names: list[str]) -> float:
        """CPU seconds these processes and their children have used since they started."""
        usage = group_usage({self.running[name].pid for name in names})
        return sum(seconds for seconds, _ in usage.values())

    def wait_until_idle(self, names: list[str], timeout: float = 10) -> None:
        """Wait until these processes use (almost) no CPU: done with the last job's records."""
        deadline = time.monotonic() + timeout
        used = self.cpu_seconds(names)
        while time.monotonic() < deadline:
            time.sleep(0.25)
            used, before = self.cpu_seconds(names), used
            if used - before < 0.02:
                return

    def check(self) -> None:
        for name, process in self.running.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited ({process.returncode}): see {self.logs}")

    def signal(self, names: list[str], signum: signal.Signals) -> None:
        for name in names:
            os.killpg(self.running[name].pid, signum)

    def stop(self) -> None:
        self.stopped.set()
        self.sampler.join()
        for process in self.running.values():
            try:
                os.killpg(process.pid, signal.SIGCONT)
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for process in self.running.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
