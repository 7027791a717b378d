"""Logging for the command line: one format, and third-party request logs kept out of INFO.

httpx logs every HTTP request at INFO: one line per store write, several a second at full rate,
drowning the lines an operator needs (ingest's periodic summary, transitions). They are demoted
to DEBUG, so ``--log-level DEBUG`` still shows them.
"""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REQUEST_LOGGERS = ("httpx", "httpcore")
"""Libraries that log one line per HTTP request."""


class RequestLogsAtDebug(logging.Filter):
    """Demotes a library's INFO records to DEBUG, dropping them unless the root logs DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether to keep ``record`` (demoted when it was INFO)."""
        if record.levelno == logging.INFO:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


def demote_request_logs() -> None:
    """Install ``RequestLogsAtDebug`` on the request loggers (idempotent)."""
    for name in REQUEST_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RequestLogsAtDebug) for f in logger.filters):
            logger.addFilter(RequestLogsAtDebug())


def configure_logging(level: int | str, *, process: str | None = None) -> None:
    """The root logger at ``level`` with the command line's format; request logs at DEBUG.

    ``process`` names the process in every line (a worker among several writing one log).
    """
    line = FORMAT if process is None else FORMAT.replace("%(name)s", f"{process} %(name)s")
    logging.basicConfig(level=level, format=line)
    demote_request_logs()
