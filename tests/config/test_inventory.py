"""The inventory file and roles: parsing, precedence, addresses, and every mistake a user can
make in them reported as a diagnostic with the file (no hosts needed: nothing connects)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tectum.config.declaration import Stack
from tectum.config.inventory import load_inventory
from tectum.diagnostics import DiagnosticError
from tests.conftest import Result

INVENTORY = """
[defaults]
user = "deploy"
key = "keys/id"
vars = { env = "prod", weight = 1 }

[hosts.web-1]
address = "10.0.0.1"
vars = { weight = 5 }

[hosts.web-2]
port = 2222
become = true
groups = ["extra"]

[hosts.db-1]
connector = "local"

[groups.web]
hosts = ["web-1", "web-2"]
user = "www"
vars = { role = "web", weight = 2 }

[groups.extra]
hosts = []
command_timeout = 30
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "inventory.toml").write_text(text)
    return tmp_path


def test_settings_and_vars_merge_host_over_groups_over_defaults(tmp_path: Path) -> None:
    inv = load_inventory(str(write(tmp_path, INVENTORY)))
    assert list(inv.hosts) == ["web-1", "web-2", "db-1"]
    web1, web2, db1 = inv.hosts.values()
    assert web1.connection.address == "10.0.0.1" and web1.connection.user == "www"
    assert web1.connection.key == str(tmp_path / "keys/id")
    assert web1.vars == {"env": "prod", "weight": 5, "role": "web"}
    assert web2.connection.address == "web-2" and web2.connection.port == 2222
    assert web2.connection.become is True and web2.connection.command_timeout == 30
    assert web2.groups == ("web", "extra")
    assert web2.vars["weight"] == 2
    assert db1.connection.connector == "local" and db1.connection.user == "deploy"
    assert inv.select("web") == ["web-1", "web-2"]
    assert inv.select("db-1,extra") == ["web-2", "db-1"]
    assert inv.select("all,local") == ["local", "web-1", "web-2", "db-1"]


def test_no_inventory_file_means_no_hosts(tmp_path: Path) -> None:
    inv = load_inventory(str(tmp_path))
    assert inv.hosts == {} and inv.select("local") == ["local"]


@pytest.mark.parametrize("text, message", [
    ("[hosts.a]\nport = \"22\"\n", "port must be a int"),
    ("[hosts.a]\nport = 70000\n", "port 70000 is not a TCP port"),
    ("[hosts.a]\nbecome = 1\n", "become must be a bool"),
    ("[hosts.a]\npasword = \"x\"\n", "unknown setting 'pasword'"),
    ("[hosts.a]\nconnector = \"winrm\"\n", 'connector must be "ssh", "local", "podman"'),
    ("[groups.g]\nhosts = [\"nobody\"]\n", "host 'nobody' is not declared"),
    ("[hosts.a]\ngroups = [\"nope\"]\n", "group 'nope' is not declared"),
    ("[hosts.all]\n", "cannot name a host"),
    ("[hosts.\"a b\"]\n", "cannot name a host"),
    ("[hosts.a]\n[groups.a]\n", "names a group too"),
    ("[server]\n", "unknown table [server]"),
    ("[hosts.a]\nconnect_timeout = 0\n", "connect_timeout must be positive"),
    ("[hosts.a]\ncommand_timeout = nan\n", "command_timeout must be positive and finite"),
    ("[defaults]\nconnect_timeout = inf\n", "connect_timeout must be positive and finite"),
    ("[hosts.a]\nbecome_password_env = \"not a name\"\n", "is not a variable name"),
    ("[hosts.a]\nkeepalive_interval = 0\n", "keepalive_interval must be positive and finite"),
    ("[defaults]\nconnect_retries = 101\n", "connect_retries must be 0 to 100"),
    ("[hosts.a]\nkeepalive_count_max = -1\n", "keepalive_count_max must be 0 to 100"),
    ("[hosts.a]\nconnect_retries = 1.5\n", "connect_retries must be a int"),
    ("[hosts.a\n", "is not valid TOML"),
])
def test_mistakes_are_diagnostics_naming_the_file(tmp_path: Path, text: str,
                                                 message: str) -> None:
    with pytest.raises(DiagnosticError) as info:
        load_inventory(str(write(tmp_path, text)))
    details = " ".join(d.detail for d in info.value.diagnostics)
    assert message in details
    assert str(tmp_path / "inventory.toml") in details


@pytest.mark.parametrize("data, message, line", [
    (b"\x00\xff\xfe\x80 binary \x9c\n", "it is not UTF-8 text (byte 0xff at line 1, column 2",
     1),
    (b'[hosts.a]\naddress = "caf\xe9"\n', "it is not UTF-8 text (byte 0xe9 at line 2, column 15",
     2),
    (bytes(range(256)) * 4, "it is not UTF-8 text (byte 0x80 at line 2, column 118", 2),
    (b"[hosts.a]\nport = 22\x00\n", "is not valid TOML", 0),
    (b"a = " + b"[" * 100_000 + b"]" * 100_000, "nested too deeply", 0),
], ids=["binary", "latin-1 text", "all bytes", "NUL byte", "deep"])
def test_binary_or_undecodable_inventory_is_an_invalid_inventory(
        tmp_path: Path, data: bytes, message: str, line: int) -> None:
    """Issue 10 item 9: a binary inventory.toml gave "Internal error — UnicodeDecodeError"."""
    path = tmp_path / "inventory.toml"
    path.write_bytes(data)
    for given in (None, str(path)):  # ROOT/inventory.toml and --inventory FILE
        with pytest.raises(DiagnosticError) as info:
            load_inventory(str(tmp_path), given)
        (diag,) = info.value.diagnostics
        assert diag.summary == "Invalid inventory"
        assert diag.detail.startswith(f"{path} is not valid TOML: "), diag.detail
        assert message in diag.detail and "Fix the file" in diag.detail
        assert diag.source is not None and diag.source.filename == str(path)
        if line:
            assert diag.source.line == line
    assert path.read_bytes() == data


def test_binary_inventory_through_the_cli(make_project: Callable[..., Path],
                                          tectum: Callable[..., Result]) -> None:
    root = make_project('from tectum.host import File\nFile("f", path="/tmp/x", content="x")\n')
    (root / "inventory.toml").write_bytes(b"\x7fELF\x02\x01\x01\x00\xff\xfe")
    other = root / "hosts.bin"
    other.write_bytes(b"\xff" * 64)
    for args, path in ((("plan", str(root)), root / "inventory.toml"),
                       (("validate", str(root)), root / "inventory.toml"),
                       (("plan", "--inventory", str(other), str(root)), other)):
        r = tectum(*args)
        assert r.returncode == 1, r.output
        assert "Traceback" not in r.output and "Internal error" not in r.output, r.output
        assert "Error: Invalid inventory" in r.stderr, r.output
        assert f"{path} is not valid TOML: it is not UTF-8 text" in r.stderr, r.output


def test_role_resources_are_addressed_per_host(tmp_path: Path) -> None:
    from tectum import apply_role, hosts
    from tectum.host import File

    inv = load_inventory(str(write(tmp_path, INVENTORY)))
    with Stack(str(tmp_path), inventory=inv) as stack:
        def role(host: object, suffix: str) -> str:
            File("conf", path=f"/etc/app{suffix}", content="x")
            return str(host.name)

        names = apply_role(role, "web", ".conf")
        File("local_only", path="/tmp/x", content="x")
        assert [h.name for h in hosts("all")] == ["web-1", "web-2", "db-1"]
    assert names == ["web-1", "web-2"]
    assert sorted(stack.resources) == [
        "file.local_only", 'host["web-1"].file.conf', 'host["web-2"].file.conf']
    assert not stack.diagnostics.has_errors


def test_role_mistakes_point_at_the_stack(make_project: Callable[..., Path],
                                          tectum: Callable[..., Result]) -> None:
    root = make_project("""
        from tectum import apply_role
        from tectum.host import File

        def role(host):
            File("conf", path="/etc/x")

        apply_role(role, "nosuchgroup")
    """, files={"inventory.toml": "[hosts.a]\n"})
    r = tectum("validate", str(root))
    assert r.returncode == 1
    assert "Unknown host or group" in r.stderr and "'nosuchgroup'" in r.stderr
    assert "stack.py:8" in r.stderr and "Traceback" not in r.output

    root = make_project("""
        from tectum import apply_role
        from tectum.host import File

        apply_role(lambda host: File("conf", path="/etc/x", content="x"), "all")
    """, name="noinv")
    r = tectum("validate", str(root))
    assert r.returncode == 1 and "No inventory" in r.stderr and "Traceback" not in r.output

    root = make_project("""
        from tectum import apply_role
        from tectum.host import File

        def role(host):
            File("conf", path="/etc/x")
            File("conf", path="/etc/y")

        apply_role(role, "all")
    """, files={"inventory.toml": "[hosts.a]\n"}, name="dup")
    r = tectum("validate", str(root))
    assert r.returncode == 1
    assert 'host["a"].file.conf is declared twice' in r.stderr


def test_missing_become_password(
        make_project: Callable[..., Path], tectum: Callable[..., Result]) -> None:
    root = make_project("""
        from tectum import apply_role
        from tectum.host import File

        apply_role(lambda host: File("conf", path="/etc/x", content="x"), "all")
    """, files={"inventory.toml": '[hosts.a]\nbecome = true\n'
                'become_password_env = "TECTUM_TEST_UNSET_PASSWORD"\n'})
    r = tectum("plan", str(root))
    assert r.returncode == 1
    assert "Become password not set" in r.stderr and "TECTUM_TEST_UNSET_PASSWORD" in r.stderr
    assert "Traceback" not in r.output


def test_automatic_dependencies_stay_on_their_host(tmp_path: Path) -> None:
    from tectum import apply_role
    from tectum.engine.planner import build_graph
    from tectum.host import Directory, File, Group, User

    inv = load_inventory(str(write(tmp_path, INVENTORY)))
    with Stack(str(tmp_path), inventory=inv) as stack:
        def role(host: object) -> None:
            Directory("d", path="/srv/x")
            File("f", path="/srv/x/f", content="x", owner="app")
            Group("g", name="app")
            User("u", name="app", group="app")

        apply_role(role, "all")
    graph, diags = build_graph(stack)
    assert not diags.has_errors
    for h in ("web-1", "web-2", "db-1"):
        assert graph.deps[f'host["{h}"].file.f'] == {f'host["{h}"].directory.d',
                                                     f'host["{h}"].user.u'}
        assert graph.deps[f'host["{h}"].user.u'] == {f'host["{h}"].group.g'}



def test_local_hosts_are_one_machine_to_automatic_dependencies(tmp_path: Path) -> None:
    """db-1 has connector = "local": its directory orders a file declared outside any role
    (this machine too) under it, and managing its path from outside the role as well is
    refused; web-1's directory of the same path is on another machine."""
    from tectum import apply_role
    from tectum.engine.planner import Resolver, build_graph
    from tectum.host import Directory, File
    from tectum.state import State

    inv = load_inventory(str(write(tmp_path, INVENTORY)))
    with Stack(str(tmp_path), inventory=inv) as stack:
        apply_role(lambda host: Directory("d", path="/srv/out"), "web-1,db-1")
        File("f", path="/srv/out/f", content="x")
        File("twice", path="/srv/out", content="x")
    graph, diags = build_graph(stack)
    assert not diags.has_errors
    assert graph.deps["file.f"] == {'host["db-1"].directory.d'}
    diags = Resolver(stack, State.new()).resolve_all(graph.order())
    twice = [d for d in diags if d.summary == "Object managed twice"]
    assert len(twice) == 1, [str(d) for d in diags]
    assert 'host["db-1"].directory.d' in twice[0].detail + str(twice[0].address)
    assert "file.twice" in twice[0].detail + str(twice[0].address)
