"""Processes with nothing (more) to do, under honcho: they wait to be stopped instead of exiting.

honcho stops every process of the Procfile as soon as one of them exits, so `honcho start`
could not run the release step, which ends once the schema is up to date, nor a Flower without
credentials, beside the app. Under honcho (which names each process it starts in
`HONCHO_PROCESS_NAME`) they say why they are idle and wait; anywhere else they exit as usual.
"""

import os
import signal

import structlog

logger = structlog.get_logger(__name__)


def under_honcho() -> bool:
    return "HONCHO_PROCESS_NAME" in os.environ


def wait(reason: str) -> int:
    """Log `reason`, then wait for SIGTERM or SIGINT (honcho stopping everything); 0 then."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    logger.info(f"{reason}; idle until honcho stops", process=os.environ["HONCHO_PROCESS_NAME"])
    try:
        while True:
            signal.pause()
    except KeyboardInterrupt:
        return 0
