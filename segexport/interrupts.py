"""Ctrl-C and SIGTERM that unwind cleanly, also while native code is running.

Python runs a signal handler between bytecodes, and that includes Python code that
native libraries call back into. An exception raised there (KeyboardInterrupt, or the
SystemExit the CLI makes of SIGTERM) must cross C++ frames on its way out; onnx's
nanobind bindings cannot carry it and abort the process (``terminate called after
throwing nanobind::python_error``), leaving the staging folder behind. So while such
code runs (:func:`deferred`), a signal is only noted and raised once the native call
has returned. A second signal in that window does not wait: it removes the folders
registered with :func:`removed_on_forced_exit` and exits at once.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

#: Exit status for each signal: the shell's 128 + signal number.
EXIT_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}

_state: dict = {"installed": False, "depth": 0, "pending": None}
_forced_exit_paths: set[Path] = set()


def install() -> None:
    """Route SIGINT and SIGTERM through this module (the CLI calls it once, in the main thread)."""
    for signum in EXIT_STATUS:
        signal.signal(signum, _handle)
    _state["installed"] = True


def _raise_for(signum: int) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    print("terminated", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_STATUS[signal.Signals(signum)])


def _handle(signum: int, _frame: FrameType | None) -> None:
    if _state["depth"] == 0:
        _raise_for(signum)
    if _state["pending"] is not None:  # asked twice: stop now, without unwinding through native code
        for path in list(_forced_exit_paths):
            shutil.rmtree(path, ignore_errors=True)
        print("interrupted again: stopped at once", file=sys.stderr, flush=True)
        os._exit(EXIT_STATUS[signal.Signals(signum)])
    _state["pending"] = signum
    print("interrupted: stopping when the current native step returns (again to stop at once)", file=sys.stderr, flush=True)


@contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM while native code that cannot unwind a Python exception runs, then raise it.

    A no-op outside the main thread or when :func:`install` was not called (library use:
    Python's own handlers stay in charge there).
    """
    if not _state["installed"] or threading.current_thread() is not threading.main_thread():
        yield
        return
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
        if _state["depth"] == 0 and _state["pending"] is not None:
            signum, _state["pending"] = _state["pending"], None
            _raise_for(signum)  # the interrupt the user asked for wins over an error of the interrupted step


@contextmanager
def removed_on_forced_exit(path: Path) -> Iterator[Path]:
    """Register ``path`` to be removed if a second signal ends the process inside :func:`deferred`."""
    _forced_exit_paths.add(path)
    try:
        yield path
    finally:
        _forced_exit_paths.discard(path)
