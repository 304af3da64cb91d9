"""``destroy`` of a service and its package, for real (issue 10, item 4), on a fleet host.

One isolated Debian host (``tests.harness.fleet``: its own namespaces, sshd, apt through the
harness's local cache). The stack installs ``cron`` — a small package with a daemon and an init
script — and keeps it running and enabled; ``Service(..., depends_on=[package])``. The host gets
the ``policy-rc.d`` that this machine (and every Docker-built image) has: package scripts neither
start nor stop daemons, so apt's ``prerm`` does not stop cron on removal — which is how
``destroy`` left Redis running with its package gone. Only tectum's own delete of the service
stops it, and the engine deletes dependents first, so it is stopped before the package goes.

Cleanup: each test destroys what it applied and then stops and purges cron by name on the host;
the host itself (its overlay with everything apt wrote) is thrown away with the fleet.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Result, run_tectum
from tests.harness.fleet import Fleet

pytestmark = [
    pytest.mark.fleet,
    pytest.mark.apt,
    pytest.mark.skipif(os.geteuid() != 0, reason="the fleet harness needs root"),
]

HOST = "svc1"
STACK = '''
from tectum import apply_role
from tectum.host import Package, Service

def node(host):
    cron = Package("cron")
    Service("cron", running=True, enabled=True, depends_on=[cron])

apply_role(node, "nodes")
'''
# A test host's processes by executable (no procps in the minimal base): "PID EXE" lines.
PROCESSES = ('for p in /proc/[0-9]*; do e=$(readlink "$p/exe" 2>/dev/null) && '
             'echo "${p#/proc/} $e"; done; true')
POLICY_RC_D = ("#!/bin/sh\n# as in Docker-built images: package scripts start and stop "
               "nothing\nexit 101\n")


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    with Fleet(names=[HOST], apt=True) as fleet:
        fleet.run(HOST, "cat > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d",
                  input=POLICY_RC_D, check=True)
        yield fleet


@pytest.fixture
def host(fleet: Fleet) -> Iterator[Fleet]:
    """The host with no cron; after the test, cron stopped (by its pidfile) and purged."""
    assert _package_status(fleet) != "ii", "cron is installed before the test"
    yield fleet
    fleet.run(HOST, "start-stop-daemon --stop --quiet --oknodo --retry TERM/5/KILL/5 "
              "--pidfile /run/crond.pid --exec /usr/sbin/cron; "
              "DEBIAN_FRONTEND=noninteractive apt-get purge -y -q cron", timeout=300)


def project(tmp_path: Path, fleet: Fleet) -> Path:
    h = fleet.host(HOST)
    root = tmp_path / "proj"
    root.mkdir()
    (root / "stack.py").write_text(STACK)
    (root / "inventory.toml").write_text("\n".join([
        "[defaults]", f'key = "{h.key_path}"', f'known_hosts = "{h.known_hosts}"',
        "connect_timeout = 3", "",
        f"[hosts.{h.name}]", f'address = "{h.address}"', f"port = {h.port}", "",
        "[groups.nodes]", f'hosts = ["{h.name}"]', ""]))
    return root


def tectum(root: Path, *args: str, log: Path | None = None) -> Result:
    env = {"TECTUM_COMMAND_LOG": str(log)} if log is not None else None
    return run_tectum(*args, str(root), env=env, timeout=600)


def _cron_processes(fleet: Fleet) -> list[str]:
    """``PID EXE`` of every process running cron's binary (``(deleted)`` once its package is
    gone)."""
    out = fleet.run(HOST, PROCESSES, check=True).stdout
    return [line for line in out.splitlines() if " /usr/sbin/cron" in line]


def _package_status(fleet: Fleet) -> str:
    """dpkg's two-letter status of cron (``ii`` installed, ``rc`` removed with its
    configuration kept), or ``""`` when dpkg never knew it."""
    res = fleet.run(HOST, "dpkg-query -W -f '${db:Status-Abbrev}' cron")
    return res.stdout.strip() if res.returncode == 0 else ""


def _mutations(log: Path) -> list[list[str]]:
    entries: list[dict[str, Any]] = [json.loads(line) for line in log.read_text().splitlines()
                                     if line.strip()]
    return [[str(a) for a in e["argv"]] for e in entries
            if e.get("mutating") and isinstance(e.get("argv"), list)]


def _apply(fleet: Fleet, root: Path) -> None:
    applied = tectum(root, "apply", "--auto-approve")
    assert applied.returncode == 0, applied.output
    assert _package_status(fleet) == "ii"
    assert len(_cron_processes(fleet)) == 1, "tectum did not start cron"
    assert fleet.run(HOST, "service cron status").returncode == 0


def test_destroy_stops_the_service_before_its_package_is_removed(host: Fleet,
                                                                  tmp_path: Path) -> None:
    """Failed before the fix: destroy only forgot the service, apt-get removed the package
    (its prerm's ``invoke-rc.d cron stop`` refused by ``policy-rc.d``), and cron kept running
    from its deleted binary."""
    root = project(tmp_path, host)
    _apply(host, root)

    log = tmp_path / "destroy.jsonl"
    gone = tectum(root, "destroy", "--auto-approve", log=log)
    assert gone.returncode == 0, gone.output
    assert _cron_processes(host) == [], "cron still runs after destroy"
    assert host.run(HOST, "service cron status").returncode != 0
    assert _package_status(host) in ("", "rc", "un", "pn")
    # the service was stopped first, then the package was removed
    done = _mutations(log)
    stops = [i for i, argv in enumerate(done) if argv == ["service", "cron", "stop"]]
    removes = [i for i, argv in enumerate(done)
               if argv[:1] == ["apt-get"] and "cron" in argv
               and ("remove" in argv or "purge" in argv)]
    assert stops and removes, done
    assert stops[-1] < removes[0], done
    assert tectum(root, "state", "list").stdout.split() == []


def test_destroy_plan_says_the_service_will_be_stopped(host: Fleet, tmp_path: Path) -> None:
    root = project(tmp_path, host)
    _apply(host, root)
    try:
        plan = tectum(root, "plan", "--destroy")
        assert plan.returncode == 0, plan.output
        lines = [line for line in plan.stdout.splitlines() if "service.cron" in line
                 or "stops the service" in line]
        assert any("stops the service" in line for line in lines), plan.stdout
        # cron was found enabled (its package enabled it): tectum does not disable it
        assert "disable" not in plan.stdout, plan.stdout
    finally:
        gone = tectum(root, "destroy", "--auto-approve")
        assert gone.returncode == 0, gone.output
