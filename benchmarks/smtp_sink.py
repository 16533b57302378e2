"""An SMTP server that accepts every message and reports when it answered, for the benchmark.

    python benchmarks/smtp_sink.py PORT [DELAY_MS]

It runs in a process of its own, so that receiving mail takes no time from the process that
measures. With DELAY_MS (0 by default) it answers each message that many milliseconds after
receiving it, as a real provider takes its time: each connection is served by a task of its own
on one event loop, so that many messages wait at once and none waits behind another. For each
message it writes one line to stdout once it has answered: the time (`time.monotonic()`, one
clock for every process on the machine) and each recipient.
"""

import asyncio
import sys
import time
from typing import Any

from aiosmtpd.controller import Controller


class Report:
    def __init__(self, delay: float) -> None:
        self.delay = delay

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        answered = time.monotonic()
        sys.stdout.write(f"{answered:.6f} {' '.join(envelope.rcpt_tos)}\n")
        sys.stdout.flush()
        return "250 OK"


async def main(port: int, delay_ms: int) -> None:
    controller = Controller(Report(delay_ms / 1000), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        controller.stop()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 0))
