"""A fleet of five real hosts (``tests.harness.fleet``: network namespaces, sshd, apt through a
local cache) configured with the ``tectum`` command: an inventory, a role applied to a group,
one plan and one state for all hosts.

Everything a test makes on the hosts lives under its own ``/srv/tectum-fleet-<hex>`` (plus the
``cron`` package, a user and a group that the fleet's teardown throws away with the hosts'
overlays); projects live in pytest's ``tmp_path``.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Result, run_tectum
from tests.harness.fleet import HOST_KEY, Fleet

pytestmark = [
    pytest.mark.fleet,
    pytest.mark.skipif(os.geteuid() != 0, reason="the fleet harness needs root"),
]

HOSTS = 5


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    with Fleet(HOSTS, apt=True) as fleet:
        yield fleet


def inventory(fleet: Fleet, groups: dict[str, list[str]] | None = None,
              extra: str = "") -> str:
    first = fleet.hosts[0]
    lines = ["[defaults]", f'key = "{first.key_path}"', f'known_hosts = "{first.known_hosts}"',
             "connect_timeout = 3", ""]
    for h in fleet.hosts:
        lines += [f"[hosts.{h.name}]", f'address = "{h.address}"', f"port = {h.port}",
                  f'vars = {{ colour = "{h.name}-blue" }}', ""]
    groups = groups or {"web": [h.name for h in fleet.hosts]}
    for name, members in groups.items():
        lines += [f"[groups.{name}]", "hosts = [" + ", ".join(f'"{m}"' for m in members) + "]",
                  'vars = { greeting = "hello" }', ""]
    return "\n".join(lines) + extra


def project(tmp_path: Path, fleet: Fleet, stack: str, *, name: str = "proj",
            groups: dict[str, list[str]] | None = None) -> Path:
    root = tmp_path / name
    root.mkdir()
    (root / "stack.py").write_text(stack)
    (root / "inventory.toml").write_text(inventory(fleet, groups))
    return root


def tectum(root: Path, *args: str, log: Path | None = None, timeout: float = 600) -> Result:
    env = {"TECTUM_COMMAND_LOG": str(log)} if log is not None else None
    return run_tectum(*args, str(root), env=env, timeout=timeout)


def log_entries(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def role_stack(base: str, *, extra: str = "") -> str:
    """A role with a directory, files (one rendered from host vars), a user, a group, the cron
    package, a cron configuration file and the cron service restarted when it changes."""
    return f'''
from tectum import apply_role, output
from tectum.host import Directory, File, Group, Package, Service, User

BASE = "{base}"

def web(host):
    top = Directory("top", path=BASE, mode="0755")
    for i in range(8):
        File(f"f{{i}}", path=f"{{top.path}}/f{{i}}.txt", content=f"{{host.name}} {{i}}\\n",
             mode="0644")
    File("greeting", path=f"{{top.path}}/greeting.txt",
         content=f"{{host.vars['greeting']}} from {{host.name}} ({{host.vars['colour']}})\\n")
    ops = Group("ops", name="tectumops")
    User("deployer", name="tectumdeploy", group="tectumops", shell="/bin/sh", depends_on=[ops])
    cron = Package("cron")
    conf = File("cron_conf", path="/etc/cron.d/tectum-fleet",
                content="# managed by tectum\\n", depends_on=[cron])
    Service("cron", running=True, restart_on=[conf], depends_on=[cron])
{extra}
apply_role(web, "web")
output("base", BASE)
'''


@pytest.fixture
def base(fleet: Fleet) -> Iterator[str]:
    path = f"/srv/tectum-fleet-{secrets.token_hex(4)}"
    yield path
    for h in fleet.hosts:
        if fleet.is_running(h.name):
            fleet.run(h.name, f"rm -rf {path}")


def read(fleet: Fleet, host: str, path: str) -> str:
    return (fleet.upper(host) / path.lstrip("/")).read_text()


# -- the whole fleet -----------------------------------------------------------------------

def test_apply_to_five_hosts_then_nothing_to_do(fleet: Fleet, base: str, tmp_path: Path
                                                ) -> None:
    root = project(tmp_path, fleet, role_stack(base))
    first = tectum(root, "apply", "--auto-approve")
    assert first.returncode == 0, first.output
    assert "Hosts: 5 changed, 0 ok, 0 failed, 0 unreachable." in first.stdout
    for h in fleet.hosts:
        assert read(fleet, h.name, f"{base}/greeting.txt") == \
            f"hello from {h.name} ({h.name}-blue)\n"
        assert f"host {h.name}: changed" in first.stdout
        assert fleet.run(h.name, "id -gn tectumdeploy", check=True).stdout.strip() == \
            "tectumops"
        assert fleet.run(h.name, "service cron status").returncode == 0
    # every address is per host, in state too
    listed = tectum(root, "state", "list").stdout.split()
    assert f'host["{fleet.hosts[2].name}"].file.greeting' in listed
    assert len([a for a in listed if a.endswith(".service.cron")]) == HOSTS

    log = tmp_path / "second.jsonl"
    second = tectum(root, "apply", "--auto-approve", log=log)
    assert second.returncode == 0, second.output
    assert "No changes." in second.stdout
    entries = log_entries(log)
    assert [e for e in entries if e["mutating"]] == []
    # one round trip per host for every fact its resources need
    facts = Counter(e["host"] for e in entries if e["op"] == "facts")
    assert facts == {h.name: 1 for h in fleet.hosts}

    plan = tectum(root, "plan", "--detailed-exitcode")
    assert plan.returncode == 0, plan.output


def test_drift_on_one_host_is_repaired_there_only(fleet: Fleet, base: str, tmp_path: Path
                                                 ) -> None:
    root = project(tmp_path, fleet, role_stack(base))
    assert tectum(root, "apply", "--auto-approve").returncode == 0
    victim = fleet.hosts[3].name
    fleet.run(victim, f"echo tampered > {base}/f2.txt && chmod 600 {base}/f5.txt", check=True)

    drift = tectum(root, "drift", "--detailed-exitcode", "--json")
    assert drift.returncode == 2, drift.output
    found = json.loads(drift.stdout)["drift"]
    assert {d["address"] for d in found} == {f'host["{victim}"].file.f2',
                                             f'host["{victim}"].file.f5'}, found
    plan = tectum(root, "plan", "--detailed-exitcode")
    assert plan.returncode == 2, plan.output
    assert f'host["{victim}"].file.f2: content' in plan.stdout
    assert "Plan: 0 to add, 2 to change" in plan.stdout
    log = tmp_path / "repair.jsonl"
    repair = tectum(root, "apply", "--auto-approve", log=log)
    assert repair.returncode == 0, repair.output
    mutated = {e["host"] for e in log_entries(log) if e["mutating"]}
    assert mutated == {victim}
    assert read(fleet, victim, f"{base}/f2.txt") == f"{victim} 2\n"
    assert f"Hosts: 1 changed, {HOSTS - 1} ok" in repair.stdout
    assert tectum(root, "plan", "--detailed-exitcode").returncode == 0


def test_limit_narrows_plan_and_apply(fleet: Fleet, base: str, tmp_path: Path) -> None:
    names = [h.name for h in fleet.hosts]
    root = project(tmp_path, fleet, role_stack(base),
                   groups={"web": names, "canary": names[:1], "rest": names[1:]})
    canary = tectum(root, "apply", "--auto-approve", "--limit", "canary")
    assert canary.returncode == 0, canary.output
    assert (fleet.upper(names[0]) / base.lstrip("/") / "f0.txt").exists()
    assert not (fleet.upper(names[1]) / base.lstrip("/")).exists()
    listed = tectum(root, "state", "list").stdout.split()
    assert all(a.startswith(f'host["{names[0]}"]') for a in listed), listed
    rest = tectum(root, "plan", "--limit", f"{names[1]},{names[2]}")
    assert rest.returncode == 0
    assert f'host["{names[1]}"].file.f0' in rest.stdout
    assert names[0] not in rest.stdout and names[3] not in rest.stdout
    bad = tectum(root, "plan", "--limit", "nosuch")
    assert bad.returncode == 1
    assert "Unknown host or group" in bad.stderr and "'nosuch'" in bad.stderr
    assert "Traceback" not in bad.output
    # destroy with --limit removes only that host's objects; state keeps the others
    assert tectum(root, "apply", "--auto-approve").returncode == 0
    gone = tectum(root, "destroy", "--auto-approve", "--limit", names[4])
    assert gone.returncode == 0, gone.output
    assert not (fleet.upper(names[4]) / base.lstrip("/")).exists()
    assert (fleet.upper(names[3]) / base.lstrip("/") / "f0.txt").exists()
    listed = tectum(root, "state", "list").stdout.split()
    assert not any(names[4] in a for a in listed)
    assert any(names[3] in a for a in listed)


def test_host_stopped_mid_run_is_unreachable_and_converges_later(
        fleet: Fleet, base: str, tmp_path: Path) -> None:
    victim = fleet.hosts[1].name
    # a slow command on every host gives the victim time to die in the middle of the run
    extra = ('    from tectum.host import Command\n'
             '    slow = Command("slow", command=["sleep", "2"], creates=f"{BASE}/f7.txt")\n'
             '    File("after", path=f"{BASE}/after.txt", content="done\\n",'
             ' depends_on=[slow])\n')
    root = project(tmp_path, fleet, role_stack(base, extra=extra))

    def stop() -> None:
        time.sleep(1.0)
        fleet.stop_host(victim)

    killer = threading.Thread(target=stop)
    killer.start()
    try:
        run = tectum(root, "apply", "--auto-approve")
    finally:
        killer.join()
    try:
        assert run.returncode == 4, run.output
        assert f"host {victim}: unreachable" in run.stderr
        assert "1 unreachable" in run.stdout and "0 failed" in run.stdout
        # its own line agrees with the summary: what could not run is unreachable, not failed
        line = next(x for x in run.stderr.splitlines() if x.startswith(f"host {victim}:"))
        assert "failed" not in line, line
        assert "Traceback" not in run.output
        for h in fleet.hosts:
            if h.name != victim:
                assert read(fleet, h.name, f"{base}/after.txt") == "done\n"
        listed = tectum(root, "state", "list").stdout.split()
        assert f'host["{victim}"].file.after' not in listed
        assert f'host["{fleet.hosts[0].name}"].file.after' in listed

        # while it is down: a plan leaves it out and says so
        plan = tectum(root, "plan")
        assert plan.returncode == 0, plan.output
        assert f"Host {victim} is unreachable" in plan.stderr
    finally:
        fleet.start_host(victim)
    again = tectum(root, "apply", "--auto-approve")
    assert again.returncode == 0, again.output
    assert read(fleet, victim, f"{base}/after.txt") == "done\n"
    assert tectum(root, "plan", "--detailed-exitcode").returncode == 0


def test_changed_host_key_is_refused_and_nothing_applied_there(
        fleet: Fleet, base: str, tmp_path: Path) -> None:
    victim = fleet.hosts[4].name
    root = project(tmp_path, fleet, role_stack(base))
    old_known = tmp_path / "known_hosts.before"
    old_known.write_text(Path(fleet.hosts[0].known_hosts).read_text())
    inv = (root / "inventory.toml").read_text().replace(str(fleet.hosts[0].known_hosts),
                                                        str(old_known))
    (root / "inventory.toml").write_text(inv)
    fleet.stop_host(victim)
    for suffix in ("", ".pub"):
        (fleet.upper(victim) / (HOST_KEY + suffix).lstrip("/")).unlink()
    fleet.start_host(victim)  # boots with a new host key; old_known has the old one
    log = tmp_path / "refused.jsonl"
    run = tectum(root, "apply", "--auto-approve", "--accept-new-host-keys", log=log)
    assert run.returncode == 1, run.output
    assert f"Host {victim} is refused" in run.stderr and "CHANGED" in run.stderr
    assert "Traceback" not in run.output
    assert not (fleet.upper(victim) / base.lstrip("/")).exists()
    assert [e for e in log_entries(log) if e["host"] == victim and e["mutating"]] == []
    for h in fleet.hosts:
        if h.name != victim:
            assert (fleet.upper(h.name) / base.lstrip("/") / "f0.txt").exists()


def test_serial_batches_stop_at_max_fail_percent(fleet: Fleet, base: str, tmp_path: Path
                                                 ) -> None:
    names = [h.name for h in fleet.hosts]
    # a command that fails on the first host only
    stack = f'''
from tectum import apply_role
from tectum.host import Command, Directory, File

def role(host):
    top = Directory("top", path="{base}")
    File("marker", path="{base}/marker", content="x\\n", depends_on=[top])
    if host.name == "{names[0]}":
        Command("boom", command=["false"], depends_on=[top])

apply_role(role, "web")
'''
    root = project(tmp_path, fleet, stack)
    run = tectum(root, "apply", "--auto-approve", "--serial", "1,2", "--max-fail-percent", "0")
    assert run.returncode == 1, run.output
    assert "batch 1 of 3" in run.stderr and "not attempted" in run.output
    assert (fleet.upper(names[0]) / base.lstrip("/") / "marker").exists()
    for name in names[1:]:
        assert not (fleet.upper(name) / base.lstrip("/")).exists()
    # a threshold the failure does not exceed lets every batch run (strictly greater stops)
    run = tectum(root, "apply", "--auto-approve", "--serial", "1", "--max-fail-percent", "100")
    assert run.returncode == 1, run.output
    for name in names[1:]:
        assert (fleet.upper(name) / base.lstrip("/") / "marker").exists()
    bad = tectum(root, "apply", "--auto-approve", "--serial", "0")
    assert bad.returncode == 1 and "Invalid --serial" in bad.stderr


def test_local_machine_is_just_another_host(fleet: Fleet, base: str, tmp_path: Path) -> None:
    local_dir = tmp_path / "local-out"
    stack = f'''
from tectum import apply_role
from tectum.host import Directory, File

def role(host):
    d = Directory("d", path=host.vars.get("out", "{base}"))
    File("f", path=f"{{d.path}}/who", content=host.name + "\\n")

apply_role(role, "web,controller")
File("plain_local", path="{local_dir}/plain", content="local\\n")
'''
    root = project(tmp_path, fleet, stack)
    (root / "inventory.toml").write_text(
        inventory(fleet) + f'\n[hosts.controller]\nconnector = "local"\n'
        f'vars = {{ out = "{local_dir}" }}\n')
    run = tectum(root, "apply", "--auto-approve")
    assert run.returncode == 0, run.output
    assert (local_dir / "who").read_text() == "controller\n"
    assert (local_dir / "plain").read_text() == "local\n"
    assert read(fleet, fleet.hosts[0].name, f"{base}/who") == f"{fleet.hosts[0].name}\n"
    assert "host controller: changed" in run.stdout and "host local: changed" in run.stdout
    listed = tectum(root, "state", "list").stdout.split()
    assert 'host["controller"].file.f' in listed and "file.plain_local" in listed
    assert tectum(root, "plan", "--detailed-exitcode").returncode == 0
