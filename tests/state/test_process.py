"""``pid_alive``: whether a stale lock's holder or a dead writer's temporary file belongs to a
running process. A zombie (dead, its parent has not reaped it yet) is not running: its locks are
released and its files abandoned (a review finding: sweeps waited on a slow init's reaping)."""

from __future__ import annotations

import os
import subprocess
import time

from tectum.process import pid_alive


def test_a_running_process_a_zombie_and_a_reaped_one() -> None:
    assert pid_alive(os.getpid())
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert pid_alive(child.pid)
    finally:
        child.kill()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # killed, not yet waited for: a zombie
        with open(f"/proc/{child.pid}/stat", "rb") as fh:
            if b") Z" in fh.read():
                break
        time.sleep(0.01)
    assert not pid_alive(child.pid)
    child.wait()
    assert not pid_alive(child.pid)
