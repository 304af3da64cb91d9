"""Facts of real hosts (``tests.harness.fleet``): a role that branches on ``host.facts`` and
renders them into a template; gathered once when unknown, then read in each host's one read
round trip (the command log shows it), re-planned when they moved, unknown for a host that
cannot be reached."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tectum.providers.host.facts import FACTS_ARGV
from tests.e2e.test_fleet import inventory, log_entries, read, tectum
from tests.harness.fleet import Fleet

pytestmark = [
    pytest.mark.fleet,
    pytest.mark.skipif(os.geteuid() != 0, reason="the fleet harness needs root"),
]

STACK = '''
from tectum import apply_role
from tectum.host import Directory, File

BASE = {base!r}

def role(host):
    f = host.facts
    Directory("base", path=BASE)
    File("facts", path=f"{{BASE}}/facts.txt", template="facts.j2",
         vars={{"facts": f, "name": host.name}})
    if f.os.family == "debian" and f.package_manager == "apt":
        File("debian", path=f"{{BASE}}/debian.txt", content=f"{{f.os.codename}}\\n")

apply_role(role, "all")
'''

TEMPLATE = ("{{ name }}: {{ facts.hostname }} {{ facts.addresses.ipv4 | join(',') }} "
            "{{ facts.os.id }} {{ facts.init }}\n")


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    with Fleet(2) as fleet:
        yield fleet


@pytest.fixture
def root(fleet: Fleet, tmp_path: Path) -> Iterator[Path]:
    base = f"/srv/tectum-facts-{secrets.token_hex(4)}"
    root = tmp_path / "proj"
    root.mkdir()
    (root / "stack.py").write_text(STACK.format(base=base))
    (root / "facts.j2").write_text(TEMPLATE)
    (root / "inventory.toml").write_text(inventory(fleet))
    (root / "base").write_text(base)
    yield root
    for h in fleet.hosts:
        if fleet.is_running(h.name):
            fleet.run(h.name, f"rm -rf {base}")


def _facts_runs(entries: list[dict[str, object]], host: str) -> list[str]:
    """The host's log as ``facts`` (a prefetch round trip, ``+`` when it carried commands)
    and ``run-facts`` (the facts command asked for) in order."""
    out = []
    for e in entries:
        if e["host"] != host:
            continue
        if e["op"] == "facts":
            out.append("facts+" if e.get("commands") else "facts")
        elif e["op"] == "run" and tuple(e.get("argv") or ()) == FACTS_ARGV:
            out.append("run-facts")
    return out


def test_a_role_decides_on_facts_and_a_no_op_reads_them_in_the_one_round_trip(
        fleet: Fleet, root: Path, tmp_path: Path) -> None:
    base = (root / "base").read_text()
    log = tmp_path / "first.jsonl"
    first = tectum(root, "apply", "-auto-approve", log=log)
    assert first.returncode == 0, first.output
    for h in fleet.hosts:
        hostname = fleet.run(h.name, "hostname", check=True).stdout.strip()
        assert read(fleet, h.name, f"{base}/facts.txt") == \
            f"{h.name}: {hostname} {h.address} debian sysvinit\n"
        assert read(fleet, h.name, f"{base}/debian.txt") == "bookworm\n"
        # unknown before: gathered by one command of its own, then the reads
        assert _facts_runs(log_entries(log), h.name)[:2] == ["run-facts", "facts"]
    cache = json.loads((root / ".tectum" / "facts.json").read_text())
    assert set(cache["hosts"]) == {h.name for h in fleet.hosts}

    log = tmp_path / "noop.jsonl"
    noop = tectum(root, "plan", "-detailed-exitcode", log=log)
    assert noop.returncode == 0, noop.output
    entries = log_entries(log)
    for h in fleet.hosts:
        # remembered facts, checked with the reads: the facts command rode along in the one
        # prefetch round trip and was answered from it
        assert _facts_runs(entries, h.name) == ["facts+", "run-facts"]
    assert [e for e in entries if e["mutating"]] == []


def test_facts_that_moved_since_the_last_run_are_planned_with_again(
        fleet: Fleet, root: Path, tmp_path: Path) -> None:
    first = tectum(root, "apply", "-auto-approve")
    assert first.returncode == 0, first.output
    cache_path = root / ".tectum" / "facts.json"
    cache = json.loads(cache_path.read_text())
    name = fleet.hosts[0].name
    real = cache["hosts"][name]["facts"]["hostname"]
    cache["hosts"][name]["facts"]["hostname"] = "renamed-since"
    cache["hosts"][name]["facts"]["os"]["family"] = "redhat"
    cache_path.write_text(json.dumps(cache))
    log = tmp_path / "plan.jsonl"
    plan = tectum(root, "plan", "-detailed-exitcode", log=log)
    # planned with what the host says now: nothing to change (not a delete of debian.txt)
    assert plan.returncode == 0, plan.output
    assert "No changes." in plan.stdout
    assert _facts_runs(log_entries(log), name) == ["facts+", "run-facts", "facts+",
                                                    "run-facts"]
    assert json.loads(cache_path.read_text())["hosts"][name]["facts"]["hostname"] == real


@pytest.mark.parametrize("known", [False, True], ids=["never-read", "remembered"])
def test_a_host_that_cannot_be_reached_has_unknown_facts(fleet: Fleet, root: Path,
                                                          known: bool) -> None:
    up, down = fleet.hosts[0].name, fleet.hosts[1].name
    if known:  # applied before: state and the facts cache hold the host
        first = tectum(root, "apply", "-auto-approve")
        assert first.returncode == 0, first.output
    fleet.stop_host(down, keep_network=True)
    try:
        plan = tectum(root, "plan")
        assert plan.returncode == 0, plan.output
        assert f"Host {down} is unreachable" in plan.output
        assert "Traceback" not in plan.output
        if known:  # nothing planned there: not a delete of what its role declares
            assert "No changes." in plan.stdout
        else:
            assert f'host["{up}"].file.debian' in plan.stdout
            assert f'host["{down}"]' not in plan.stdout
            cache = json.loads((root / ".tectum" / "facts.json").read_text())
            assert set(cache["hosts"]) == {up}
    finally:
        fleet.start_host(down)


CROSS = '''
from tectum import apply_role, hosts
from tectum.host import Directory, File

BASE = {base!r}

def role(host):
    Directory("base", path=BASE)
    File("one", path=f"{{BASE}}/one.txt", content="one\\n")
    other = [h for h in hosts("all") if h.name != host.name][0]
    File("peer", path=f"{{BASE}}/peer.txt", content=f"{{other.facts.hostname}}\\n")

apply_role(role, "all")
'''


def test_a_role_stopped_at_a_down_hosts_facts_deletes_nothing(fleet: Fleet, root: Path
                                                              ) -> None:
    """Each host's role reads its peer's facts. With the peer down, the role on the host that
    is up stops at that line: what it declares after it is not planned — and not taken for
    removed (a review finding: it was planned for deletion, and deleted)."""
    base = (root / "base").read_text()
    (root / "stack.py").write_text(CROSS.format(base=base))
    first = tectum(root, "apply", "-auto-approve")
    assert first.returncode == 0, first.output
    up, down = fleet.hosts[0].name, fleet.hosts[1].name
    fleet.stop_host(down, keep_network=True)
    try:
        plan = tectum(root, "plan")
        assert plan.returncode == 0, plan.output
        assert "Warning: Role stopped at a fact" in plan.output
        assert f"none of {up}'s resources is deleted" in plan.output.replace("\n  ", " ")
        assert "No changes." in plan.stdout and "to destroy" not in plan.stdout
        applied = tectum(root, "apply", "-auto-approve")
        assert applied.returncode == 4, applied.output  # (a host was unreachable)
        assert read(fleet, up, f"{base}/peer.txt").strip() == down
    finally:
        fleet.start_host(down)
