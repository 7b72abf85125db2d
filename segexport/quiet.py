"""Keeping libraries' progress prints and advice out of the CLI's output.

Exporters, compilers and quantizers print to stdout/stderr, from Python and from C++,
and log on the root logger. Each helper silences one of these for a block;
``SEGEXPORT_VERBOSE_EXPORT=1`` lets prints and C++ output through when debugging.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from collections.abc import Iterator


def _verbose() -> bool:
    return bool(os.environ.get("SEGEXPORT_VERBOSE_EXPORT"))


@contextlib.contextmanager
def quiet_logger(name: str | None = None, level: int = logging.ERROR) -> Iterator[None]:
    """Raise one logger's level (the root logger by default) for the block."""
    logger = logging.getLogger(name)
    saved = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(saved)


@contextlib.contextmanager
def quiet_prints(stderr: bool = True) -> Iterator[None]:
    """Send Python-level prints on stdout (and stderr) to a buffer that is dropped."""
    if _verbose():
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()), (contextlib.redirect_stderr(io.StringIO()) if stderr else contextlib.nullcontext()):
        yield


@contextlib.contextmanager
def quiet_fds() -> Iterator[None]:
    """Point file descriptors 1 and 2 at /dev/null for the block: what C++ code prints goes nowhere."""
    if _verbose():
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)
