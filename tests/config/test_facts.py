"""Facts: the command's output parsed into the documented shape, the read-only view a stack
gets, and unknown facts during ``validate`` (Python decisions on them are refused and become a
warning; formatting them is allowed)."""

from __future__ import annotations

import copy
import json
import os
import platform
import subprocess
from pathlib import Path

import pytest

from tectum.config.facts import Facts, FactsNeeded, FactsUnknown, UnknownFact, facts_of
from tectum.providers.host.facts import FACTS_ARGV, parse_facts
from tests.conftest import run_tectum

UBUNTU = """
@@tectum-facts:os-release
PRETTY_NAME="Ubuntu 24.04.1 LTS"
NAME="Ubuntu"
VERSION_ID="24.04"
VERSION_CODENAME=noble
ID=ubuntu
ID_LIKE=debian
@@tectum-facts:uname
Linux
6.8.0-45-generic
aarch64
@@tectum-facts:nproc
8
@@tectum-facts:meminfo
MemTotal:       16318156 kB
@@tectum-facts:hostname
web-1
@@tectum-facts:hosts
10.0.0.11       web-1.example.org web-1
@@tectum-facts:ip
[{"ifname":"lo","address":"00:00:00:00:00:00","addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8,"scope":"host"}]},{"ifname":"eth0","address":"52:54:00:12:34:56","addr_info":[{"family":"inet","local":"10.0.0.11","prefixlen":24,"scope":"global"},{"family":"inet6","local":"fe80::1","prefixlen":64,"scope":"link"}]}]
@@tectum-facts:init
systemd
@@tectum-facts:pkg
apt-get
@@tectum-facts:end
"""


def test_the_output_of_an_ubuntu_host_is_parsed_into_the_documented_shape() -> None:
    facts = parse_facts(UBUNTU)
    assert facts["os"] == {"id": "ubuntu", "version": "24.04", "codename": "noble",
                           "family": "debian", "name": "Ubuntu 24.04.1 LTS"}
    assert facts["kernel"] == {"name": "Linux", "release": "6.8.0-45-generic"}
    assert facts["architecture"] == "aarch64"
    assert facts["cpus"] == 8 and facts["memory_mb"] == 15935
    assert (facts["hostname"], facts["fqdn"], facts["domain"]) == \
        ("web-1", "web-1.example.org", "example.org")
    assert facts["addresses"] == {"ipv4": ["10.0.0.11"], "ipv6": []}
    assert facts["interfaces"]["eth0"] == {
        "mac": "52:54:00:12:34:56",
        "addresses": [{"address": "10.0.0.11", "prefix": 24, "family": "ipv4"},
                      {"address": "fe80::1", "prefix": 64, "family": "ipv6"}]}
    assert facts["init"] == "systemd" and facts["package_manager"] == "apt"
    json.dumps(facts)  # JSON all through: kept in the facts cache


def test_a_family_comes_from_id_like_and_missing_sources_give_none() -> None:
    rocky = UBUNTU.replace("ID=ubuntu", "ID=rocky").replace("ID_LIKE=debian",
                                                           'ID_LIKE="rhel centos fedora"')
    assert parse_facts(rocky)["os"]["family"] == "redhat"
    bare = parse_facts("@@tectum-facts:end\n")
    assert bare["os"]["id"] is None and bare["package_manager"] is None
    assert bare["interfaces"] == {} and bare["cpus"] == 1
    with pytest.raises(ValueError, match="incomplete"):
        parse_facts("@@tectum-facts:uname\nLinux\n")  # cut short: no end marker


def test_the_command_reports_this_machine() -> None:
    out = subprocess.run(FACTS_ARGV, capture_output=True, text=True, check=True).stdout
    facts = parse_facts(out)
    assert facts["architecture"] == platform.machine()
    assert facts["kernel"]["release"] == platform.release()
    assert facts["cpus"] == len(os.sched_getaffinity(0))
    assert facts["hostname"] == Path("/proc/sys/kernel/hostname").read_text().strip()
    release = platform.freedesktop_os_release()
    assert facts["os"]["id"] == release["ID"]
    assert facts["init"] == ("systemd" if os.path.isdir("/run/systemd/system") else "sysvinit")


def test_facts_are_a_read_only_dict_with_attribute_access() -> None:
    facts = Facts(parse_facts(UBUNTU))
    assert facts.os.family == facts["os"]["family"] == "debian"
    assert isinstance(facts.addresses.ipv4, tuple)
    with pytest.raises(TypeError, match="read-only"):
        facts["os"] = {}
    with pytest.raises(TypeError, match="read-only"):
        facts.os.update(id="x")
    with pytest.raises(AttributeError, match="no fact 'osfamily'.*os"):
        _ = facts.osfamily
    assert copy.deepcopy(facts) == facts and json.loads(json.dumps(facts))["cpus"] == 8


def test_an_unknown_fact_formats_but_refuses_decisions() -> None:
    fact = UnknownFact("web-1").os.family
    assert f"{fact}" == "(fact os.family of web-1)"
    for decide in (lambda: bool(fact), lambda: fact == "debian", lambda: "x" in fact,
                   lambda: len(fact), lambda: list(fact), lambda: int(fact)):
        with pytest.raises(FactsUnknown) as info:
            decide()
        assert (info.value.host, info.value.name) == ("web-1", "os.family")
    # a role's own `except Exception` does not swallow it
    assert not issubclass(FactsUnknown, Exception) and not issubclass(FactsNeeded, Exception)


class _Source:
    def __init__(self, known: dict[str | None, dict[str, object]]) -> None:
        self.known = known

    def facts(self, host: str | None) -> dict[str, object] | None:
        return self.known.get(host)


def test_facts_of_a_source() -> None:
    assert isinstance(facts_of(None, "a"), UnknownFact)  # validate: no source
    with pytest.raises(FactsNeeded) as info:
        facts_of(_Source({}), "a")
    assert info.value.host == "a"
    with pytest.raises(FactsUnknown):  # unreachable: the role stops there for that host
        facts_of(_Source({"a": {}}), "a")
    assert facts_of(_Source({"a": {"cpus": 2}}), "a") == {"cpus": 2}


def test_validate_warns_where_a_stack_decides_on_a_fact_and_reads_nothing(tmp_path: Path
                                                                            ) -> None:
    (tmp_path / "stack.py").write_text(
        "from tectum import facts, output\n"
        "from tectum.host import File\n"
        f"File('named', path='{tmp_path}/n', content=f'{{facts().hostname}}\\n')\n"
        "if facts().os.family == 'debian':\n"
        f"    File('deb', path='{tmp_path}/d', content='x')\n")
    result = run_tectum("validate", str(tmp_path))
    assert result.returncode == 0, result.output
    assert "Success! The configuration is valid (1 resource)." in result.stdout
    assert "Decided on a fact not known yet" in result.stderr
    assert f"{tmp_path}/stack.py:4" in result.stderr
    assert "os.family of this machine" in result.stderr
    assert not (tmp_path / ".tectum" / "facts.json").exists()


def test_plan_knows_this_machines_facts_and_remembers_them(tmp_path: Path) -> None:
    (tmp_path / "stack.py").write_text(
        "from tectum import facts\n"
        "from tectum.host import File\n"
        "if facts().os.family == 'debian':\n"
        f"    File('deb', path='{tmp_path}/d', content=f'{{facts().os.codename}}\\n')\n")
    first = run_tectum("apply", "-auto-approve", str(tmp_path))
    assert first.returncode == 0, first.output
    codename = platform.freedesktop_os_release().get("VERSION_CODENAME", "")
    assert (tmp_path / "d").read_text() == f"{codename}\n"
    cache = json.loads((tmp_path / ".tectum" / "facts.json").read_text())
    assert cache["hosts"]["local"]["facts"]["os"]["codename"] == codename
    again = run_tectum("plan", "-detailed-exitcode", str(tmp_path))
    assert again.returncode == 0, again.output


def test_facts_asked_for_round_after_round_are_all_gathered(tmp_path: Path) -> None:
    """Each evaluation may ask for another host's facts (this machine's, then a database
    host's, then each web host's): gathering goes on until nothing new is asked, so nothing
    the stack declares is left out (a review finding: three rounds were the limit)."""
    (tmp_path / "inventory.toml").write_text(
        "".join(f'[hosts.{n}]\nconnector = "local"\n' for n in ("db", "w1", "w2", "w3")))
    (tmp_path / "stack.py").write_text(
        "from tectum import apply_role, facts, hosts\n"
        "from tectum.host import File\n"
        f"T = {str(tmp_path)!r}\n"
        "if facts().cpus:\n"
        "    db = hosts('db')[0]\n"
        "    if db.facts.cpus:\n"
        "        def web(host):\n"
        "            if host.facts.cpus:\n"
        "                File('f', path=f'{T}/{host.name}', content='x')\n"
        "        apply_role(web, 'w1,w2,w3')\n")
    first = run_tectum("plan", str(tmp_path))
    assert first.returncode == 0, first.output
    assert "Plan: 3 to add" in first.stdout
    (tmp_path / ".tectum" / "facts.json").unlink()
    again = run_tectum("plan", str(tmp_path))
    assert "Plan: 3 to add" in again.stdout, again.output


def test_the_stacks_own_code_stopped_at_an_unreadable_fact_plans_nothing(tmp_path: Path
                                                                          ) -> None:
    """A decision at the top of the stack on a host outside --limit (never contacted) would
    leave what follows undeclared and planned for removal: the plan is refused instead."""
    (tmp_path / "inventory.toml").write_text(
        '[hosts.a]\nconnector = "local"\n[hosts.b]\naddress = "127.0.0.9"\nport = 1\n')
    (tmp_path / "stack.py").write_text(
        "from tectum import apply_role, hosts\n"
        "from tectum.host import File\n"
        f"T = {str(tmp_path)!r}\n"
        "if hosts('b')[0].facts.os.family == 'debian':\n"
        "    File('x', path=f'{T}/x', content='x')\n"
        "apply_role(lambda host: File('one', path=f'{T}/one', content='1'), 'a')\n")
    result = run_tectum("plan", "--limit", "a", str(tmp_path))
    assert result.returncode == 1, result.output
    assert "Error: Stack stopped at a fact" in result.stderr
    assert f"{tmp_path}/stack.py:4" in result.stderr
    assert "decides on the facts of b, whose facts are not read (the host is outside " \
        "--limit)" in result.stderr.replace("\n", " ")
    assert "Traceback" not in result.output
