"""Processes on this machine."""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """True when a process with ``pid`` runs on this machine (``kill(pid, 0)``; a process of
    another user counts as running; a zombie — dead, not yet reaped by its parent — does not,
    from ``/proc/PID/stat`` where there is one)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return True
    # the state follows the command name in parentheses (which may hold spaces)
    return stat[stat.rfind(b")") + 2:][:1] != b"Z"
