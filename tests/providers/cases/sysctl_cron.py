"""Conformance cases of ``sysctl`` and ``cron`` (this machine, as root).

``sysctl`` changes ``net.ipv4.tcp_keepalive_probes`` of this machine's network namespace (how
many unanswered keepalive probes drop an idle TCP connection: harmless for a few seconds) and
puts its value back afterwards, with its ``/etc/sysctl.d`` file removed. ``cron`` writes
``/etc/cron.d/tectum-conf-<hex>`` (a job that never runs here: the daemon need not run),
removed afterwards.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tectum.testing import Case

KEY = "net.ipv4.tcp_keepalive_probes"
PROC = "/proc/sys/net/ipv4/tcp_keepalive_probes"
CONF = f"/etc/sysctl.d/99-tectum-{KEY}.conf"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="ascii") as fh:
        fh.write(text)


@contextmanager
def sysctl_case(tmp: Path) -> Iterator[Case]:
    original = Path(PROC).read_text(encoding="ascii").strip()
    had_file = os.path.exists(CONF)
    if had_file:
        pytest.skip(f"{CONF} exists already (left by someone else): not touched")
    first, second = (int(original) % 20) + 1, (int(original) % 20) + 2

    def tamper(_target: Any, _record: dict[str, Any]) -> None:
        _write(PROC, f"{second + 1}\n")  # the live value changed by hand

    try:
        yield Case("sysctl", {"name": KEY, "value": first}, update={"value": str(second)},
                   tamper=tamper, drift="value", import_id=KEY, root=str(tmp))
    finally:
        _write(PROC, original + "\n")
        if os.path.exists(CONF):
            os.unlink(CONF)


@contextmanager
def cron_case(tmp: Path) -> Iterator[Case]:
    name = f"tectum-conf-{secrets.token_hex(4)}"
    path = f"/etc/cron.d/{name}"

    def tamper(_target: Any, _record: dict[str, Any]) -> None:
        text = Path(path).read_text(encoding="utf-8")
        _write(path, text.replace("*/10 ", "7 ", 1))  # the minute edited by hand

    try:
        yield Case("cron", {"name": name, "minute": "5", "hour": "3", "job": "/bin/true"},
                   update={"minute": "*/10", "env": {"MAILTO": ""}},
                   tamper=tamper, drift="minute", import_id=name, root=str(tmp))
    finally:
        if os.path.lexists(path):
            os.unlink(path)


BUILDERS = {"sysctl": sysctl_case, "cron": cron_case}
MARKS = {"sysctl": [pytest.mark.system, needs_root], "cron": [pytest.mark.system, needs_root]}
