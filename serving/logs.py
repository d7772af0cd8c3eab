"""Plain `time level message` log lines for the serving commands."""

import logging
import sys


def setup_logging(level=logging.INFO):
    logger = logging.getLogger("serving")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
