"""An SMTP server that accepts every message and reports when it arrived, for the benchmark.

    python benchmarks/smtp_sink.py PORT

It runs in a process of its own, so that receiving mail takes no time from the process that
measures. For each message it writes one line to stdout: the time it arrived
(`time.monotonic()`, one clock for every process on the machine) and each recipient.
"""

import asyncio
import sys
import time
from typing import Any

from aiosmtpd.controller import Controller


class Report:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        arrived = time.monotonic()
        sys.stdout.write(f"{arrived:.6f} {' '.join(envelope.rcpt_tos)}\n")
        sys.stdout.flush()
        return "250 OK"


async def main(port: int) -> None:
    controller = Controller(Report(), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        controller.stop()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
