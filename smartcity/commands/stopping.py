"""How the long-running sub-commands stop: on SIGTERM (systemd, docker stop) or SIGINT (Ctrl-C)."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType


def stop_on_signals(log: logging.Logger, then: str) -> threading.Event:
    """An event set when SIGTERM or SIGINT arrives, logging ``<SIGNAL> received: <then>``.

    The service loop waits on the event rather than being interrupted, so it finishes the
    step in hand (a flush, a processing run) before it stops.
    """
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        log.info("%s received: %s", signal.Signals(signum).name, then)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return stop
