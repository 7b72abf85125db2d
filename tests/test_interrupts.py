"""Ctrl-C and SIGTERM wait out native code, then unwind; a second signal stops at once and cleans up.

Each case runs in a subprocess: the handlers are process-wide, and pytest has its own
Ctrl-C handling.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

SCRIPT = """
import os, signal, sys, time
from pathlib import Path
from segexport import interrupts

interrupts.install()
folder = Path(sys.argv[1])
folder.mkdir()
try:
    with interrupts.removed_on_forced_exit(folder), interrupts.deferred():
        {body}
        print("native step returned", flush=True)
    {after}
    print("after the step", flush=True)
except KeyboardInterrupt:
    print("KeyboardInterrupt", flush=True)
    sys.exit(130)
"""


def _run(tmp_path, body: str, after: str = "pass") -> subprocess.CompletedProcess:
    code = textwrap.dedent(SCRIPT).replace("{body}", body).replace("{after}", after)
    return subprocess.run([sys.executable, "-c", code, str(tmp_path / "staging")], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("sig", "code", "raised"), [(signal.SIGINT, 130, "KeyboardInterrupt"), (signal.SIGTERM, 143, "")])
def test_a_signal_during_native_code_is_raised_once_it_returns(tmp_path, sig, code, raised):
    done = _run(tmp_path, f"os.kill(os.getpid(), {int(sig)}); time.sleep(0.2)")
    assert done.returncode == code, done.stderr
    assert done.stdout.split() == ["native", "step", "returned", *raised.split()]
    assert "stopping when the current native step returns" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_second_signal_stops_at_once_and_removes_the_registered_folder(tmp_path):
    done = _run(tmp_path, "os.kill(os.getpid(), signal.SIGINT); time.sleep(0.2); os.kill(os.getpid(), signal.SIGINT); time.sleep(5)")
    assert done.returncode == 130, done.stderr
    assert done.stdout == ""  # nothing after the second signal ran
    assert "stopped at once" in done.stderr
    assert not (tmp_path / "staging").exists()


def test_outside_native_code_a_signal_is_raised_at_once(tmp_path):
    done = _run(tmp_path, "pass", after="os.kill(os.getpid(), signal.SIGINT); time.sleep(5)")
    assert done.returncode == 130, done.stderr
    assert done.stdout.split() == ["native", "step", "returned", "KeyboardInterrupt"]
