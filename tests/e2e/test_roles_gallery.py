"""The role gallery (``examples/roles``): public Ansible roles translated to tectum, each run
for real on its own test host (``tests.harness.fleet``, apt through the harness's cache).

Every role's templates render with tectum byte for byte as ansible-core renders them, with the
role's own variables (``test_templates_render_as_ansible_does``, no hosts needed).

For every role, on a test host: the gallery's own ``stack.py`` and role packages are copied
into a project with an inventory naming one host in the role's group; then

1. the first apply converges the host;
2. a plan shows no changes and a second apply runs no mutating command (the command log);
3. the service works, with the role's configuration (asked over the host's own tools);
4. a configuration edited by hand is repaired with exactly one restart (nginx: reload, the
   role's handler), and a stopped service with an edited configuration with exactly one start;
5. ``tectum destroy`` leaves nothing tectum created: every object state records as created is
   gone (files, directories), its packages are no longer installed and its services stopped.

The hosts are thrown away with the fleet; a failing test destroys what it made before it ends.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Result, run_tectum
from tests.harness.fleet import Fleet

needs_fleet = [
    pytest.mark.fleet,
    pytest.mark.skipif(os.geteuid() != 0, reason="the fleet harness needs root"),
]

GALLERY = Path(__file__).resolve().parents[2] / "examples" / "roles"
ROLES = ("memcached", "redis", "nginx")


def _tcp(port: int, request: str) -> str:
    """A shell command sending REQUEST to 127.0.0.1:PORT with bash's /dev/tcp (the host has
    no netcat) and printing the answer."""
    return (f"exec 3<>/dev/tcp/127.0.0.1/{port} && printf '{request}' >&3 && "
            "timeout 5 cat <&3")


def memcached_check(fleet: Fleet, host: str) -> None:
    out = fleet.run(host, _tcp(11211, "stats\\r\\nquit\\r\\n"), check=True).stdout
    # the role's defaults, in effect: -m 64 (MB), -t 4, -c 1024
    assert "STAT limit_maxbytes 67108864" in out, out
    assert "STAT threads 4" in out, out
    assert "STAT max_connections 1024" in out, out


def redis_check(fleet: Fleet, host: str) -> None:
    assert fleet.run(host, "redis-cli -p 6379 ping", check=True).stdout.strip() == "PONG"
    # the role's template, in effect: databases 16, its three save points
    out = fleet.run(host, "redis-cli -p 6379 config get databases", check=True).stdout
    assert out.split() == ["databases", "16"], out
    out = fleet.run(host, "redis-cli -p 6379 config get save", check=True).stdout
    assert out.splitlines()[1] == "900 1 300 10 60 10000", out


def nginx_check(fleet: Fleet, host: str) -> None:
    out = fleet.run(host, _tcp(8080, "GET / HTTP/1.0\\r\\nHost: gallery.test\\r\\n\\r\\n"),
                    check=True).stdout
    assert out.startswith("HTTP/1.1 200 OK"), out[:500]
    assert "Welcome to nginx" in out, out[:2000]


@dataclass(frozen=True)
class Spec:
    host: str                              # the test host (the role's group holds only it)
    service: str                           # the daemon's init script
    config: str                            # the configuration file the role writes
    edit: str                              # sed expression: a hand-made change to it
    on_change: str                         # the handler: "restart" or "reload"
    check: Callable[[Fleet, str], None]
    host_vars: str = ""                    # inventory lines under [hosts.HOST]


SPECS = {
    "memcached": Spec("cache1", "memcached", "/etc/memcached.conf", "s/^-m 64$/-m 32/",
                      "restart", memcached_check),
    "redis": Spec("kv1", "redis-server", "/etc/redis/redis.conf",
                  "s/^databases 16$/databases 4/", "restart", redis_check),
    "nginx": Spec("web1", "nginx", "/etc/nginx/nginx.conf",
                  "s/^    keepalive_timeout  75;$/    keepalive_timeout  5;/", "reload",
                  nginx_check,
                  host_vars=('[[hosts.web1.vars.nginx_vhosts]]\nlisten = "8080"\n'
                             'server_name = "gallery.test"\nroot = "/var/www/html"\n'
                             'index = "index.nginx-debian.html"\n')),
}


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    with Fleet(names=[SPECS[r].host for r in ROLES], apt=True) as fleet:
        yield fleet


def project(tmp_path: Path, fleet: Fleet, role: str) -> Path:
    """The gallery as it is, with an inventory whose group ROLE holds the role's test host
    (the other groups are empty)."""
    root = tmp_path / "gallery"
    shutil.copytree(GALLERY, root, ignore=shutil.ignore_patterns("__pycache__", "inventory*"))
    spec = SPECS[role]
    h = fleet.host(spec.host)
    lines = ["[defaults]", f'key = "{h.key_path}"', f'known_hosts = "{h.known_hosts}"', "",
             f"[hosts.{h.name}]", f'address = "{h.address}"', f"port = {h.port}", "",
             spec.host_vars]
    for group in ROLES:
        members = f'"{h.name}"' if group == role else ""
        lines += [f"[groups.{group}]", f"hosts = [{members}]", ""]
    (root / "inventory.toml").write_text("\n".join(lines))
    return root


def tectum(root: Path, *args: str, log: Path | None = None) -> Result:
    env = {"TECTUM_COMMAND_LOG": str(log)} if log is not None else None
    return run_tectum(*args, str(root), env=env, timeout=900)


def mutations(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    entries = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [e for e in entries if e["mutating"]]


def service_runs(log: Path, service: str) -> list[str]:
    """The actions of the ``service NAME ACTION`` commands the run made (sysv hosts)."""
    return [e["argv"][2] for e in mutations(log)
            if e["op"] == "run" and e.get("argv", [])[:2] == ["service", service]]


def gone(fleet: Fleet, host: str, resource: dict[str, Any], process: str) -> str | None:
    """Why RESOURCE (a state entry created by tectum) is still on HOST, or None; PROCESS is
    the daemon's process name."""
    attrs, kind = resource["attributes"], resource["type"]
    if kind in ("file", "directory", "symlink"):
        if fleet.run(host, f"test -e '{attrs['path']}' || test -L '{attrs['path']}'"
                     ).returncode == 0:
            return f"{attrs['path']} still exists"
    elif kind == "package":
        status = fleet.run(host, f"dpkg-query -W -f '${{Status}}' {attrs['name']}").stdout
        if status == "install ok installed":
            return f"package {attrs['name']} is still installed"
    elif kind == "service":
        # no process of that name (an init script's "status" says nothing once the package's
        # binary is gone: Debian's scripts start with `test -x $DAEMON || exit 0`)
        procs = fleet.run(host, f"grep -lx '{process}' /proc/[0-9]*/comm").stdout.split()
        if procs:
            return f"service {attrs['name']} still runs: {procs}"
    return None


@pytest.mark.parametrize("role", [pytest.param(r, marks=needs_fleet) for r in ROLES])
def test_role_converges_holds_is_repaired_and_destroyed(role: str, fleet: Fleet,
                                                        tmp_path: Path) -> None:
    spec = SPECS[role]
    root = project(tmp_path, fleet, role)
    destroyed = False
    try:
        # 1. converge
        first = tectum(root, "apply", "-auto-approve")
        assert first.returncode == 0, first.output
        assert "Hosts: 1 changed, 0 ok, 0 failed, 0 unreachable." in first.stdout, first.output

        # 2. nothing more to do, and nothing mutating is run to find that out
        plan = tectum(root, "plan", "-detailed-exitcode")
        assert plan.returncode == 0, plan.output
        log = tmp_path / "noop.jsonl"
        second = tectum(root, "apply", "-auto-approve", log=log)
        assert second.returncode == 0, second.output
        assert "No changes." in second.stdout, second.output
        assert mutations(log) == []

        # 3. the service works, with the role's configuration
        spec.check(fleet, spec.host)

        # 4a. a hand edit of the configuration: rewritten, one restart (nginx: one reload)
        fleet.run(spec.host, f"sed -i '{spec.edit}' {spec.config}", check=True)
        drift = tectum(root, "plan", "-detailed-exitcode")
        assert drift.returncode == 2, drift.output
        assert "changed outside tectum: content" in drift.stdout, drift.output
        log = tmp_path / "repair-edit.jsonl"
        repair = tectum(root, "apply", "-auto-approve", log=log)
        assert repair.returncode == 0, repair.output
        writes = [e["path"] for e in mutations(log) if e["op"] == "write"]
        assert writes == [spec.config], mutations(log)
        assert service_runs(log, spec.service) == [spec.on_change], mutations(log)
        spec.check(fleet, spec.host)

        # 4b. the service stopped and its configuration edited: one start, no restart on top
        fleet.run(spec.host, f"sed -i '{spec.edit}' {spec.config}", check=True)
        fleet.run(spec.host, f"service {spec.service} stop", check=True)
        log = tmp_path / "repair-stop.jsonl"
        repair = tectum(root, "apply", "-auto-approve", log=log)
        assert repair.returncode == 0, repair.output
        assert service_runs(log, spec.service) == ["start"], mutations(log)
        spec.check(fleet, spec.host)
        again = tectum(root, "plan", "-detailed-exitcode")
        assert again.returncode == 0, again.output

        # 5. destroy removes what tectum created, and only that
        pulled = tectum(root, "state", "pull")
        assert pulled.returncode == 0, pulled.output
        resources = json.loads(pulled.stdout)["resources"]
        created = [r for r in resources if r.get("origin", "created") == "created"]
        assert {r["type"] for r in created} >= {"package", "service"}, resources
        # a configuration file the package installed in the same apply is the package's:
        # recorded as found, so destroy leaves it (redis's is written before its package)
        origin = {r["attributes"].get("path"): r.get("origin", "created") for r in resources}
        assert origin[spec.config] == ("created" if spec.service == "redis-server"
                                       else "found"), resources
        found_paths = [r["attributes"]["path"] for r in resources
                       if r.get("origin") == "found" and "path" in r["attributes"]]
        running = fleet.run(spec.host, f"grep -lx '{spec.service}' /proc/[0-9]*/comm")
        assert running.stdout.split(), f"no {spec.service} process before destroy"
        out = tectum(root, "destroy", "-auto-approve")
        destroyed = out.returncode == 0
        assert destroyed, out.output
        left = [why for r in created
                if (why := gone(fleet, spec.host, r, spec.service)) is not None]
        assert left == [], left
        for path in found_paths:   # found objects are forgotten, left as they were
            assert fleet.run(spec.host, f"test -e '{path}'").returncode == 0, path
        listed = tectum(root, "state", "list")
        assert listed.stdout.strip() == "", listed.output
    finally:
        if not destroyed:
            tectum(root, "destroy", "-auto-approve")


# -- the templates, against ansible-core ---------------------------------------------------

def _role(name: str) -> Any:
    """The gallery's role package NAME, imported from examples/roles."""
    spec = importlib.util.spec_from_file_location(f"gallery_{name}", GALLERY / name /
                                                  "__init__.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ansible_render(path: Path, variables: dict[str, Any]) -> bytes:
    """PATH rendered by ansible-core's Templar as the ``template`` action drives it."""
    from ansible.module_utils.common.text.converters import (  # type: ignore[import-untyped]
        to_bytes,
    )
    from ansible.parsing.dataloader import DataLoader  # type: ignore[import-untyped]
    from ansible.template import Templar, trust_as_template  # type: ignore[import-untyped]

    templar = Templar(loader=DataLoader(), variables=variables)
    templar = templar.copy_with_new_env(searchpath=[str(path.parent)],
                                        available_variables=variables)
    out = templar.template(trust_as_template(path.read_text(encoding="utf-8")),
                           escape_backslashes=False,
                           overrides={"trim_blocks": True, "lstrip_blocks": False,
                                      "newline_sequence": "\n"})
    rendered: bytes = to_bytes(out or "", encoding="utf-8", errors="surrogate_or_strict")
    return rendered


MANAGED = {"ansible_managed": "Ansible managed"}


def _template_cases() -> list[Any]:
    """(role, template, variables overriding the role's defaults) — the defaults, and values
    that take the templates' other branches."""
    vhost = {"listen": "8080", "server_name": "a.test b.test", "root": "/var/www/html"}
    full_vhost = {"listen": ["80", "[::]:80"], "server_name": "a.test",
                  "server_name_redirect": "www.a.test", "error_page": "404 /404.html",
                  "access_log": "/var/log/a.log", "error_log": "/var/log/a.err",
                  "return": "301 https://a.test",
                  "extra_parameters": "location / {\n  try_files $uri =404;\n}"}
    nginx_vars = {"nginx_worker_processes": '"2"', "nginx_user": "www-data"}
    return [
        pytest.param("memcached", "memcached-Debian.conf.j2", {}, id="memcached"),
        pytest.param("memcached", "memcached-Debian.conf.j2",
                     {"memcached_log_verbosity": "-vv", "memcached_memory_limit": 128},
                     id="memcached-set"),
        pytest.param("redis", "redis.conf.j2", {}, id="redis"),
        pytest.param("redis", "redis.conf.j2",
                     {"redis_save": [], "redis_maxmemory": "1gb", "redis_requirepass": "pw",
                      "redis_disabled_commands": ["FLUSHALL", "KEYS"],
                      "redis_includes": ["/etc/redis/local.conf"],
                      "redis_unixsocket": "/run/redis/redis.sock",
                      "redis_extra_config": "maxclients 64"}, id="redis-set"),
        pytest.param("nginx", "nginx.conf.j2", nginx_vars, id="nginx"),
        pytest.param("nginx", "nginx.conf.j2",
                     {**nginx_vars, "nginx_proxy_cache_path": "/var/cache/nginx keys_zone=c:1m",
                      "nginx_conf_path": "/etc/nginx/sites-enabled",
                      "nginx_upstreams": [{"name": "app", "strategy": "ip_hash",
                                           "servers": ["a:80", "b:80 weight=3"]}]},
                     id="nginx-set"),
        pytest.param("nginx", "vhost.j2", {**nginx_vars, "item": vhost}, id="vhost"),
        pytest.param("nginx", "vhost.j2", {**nginx_vars, "item": full_vhost}, id="vhost-set"),
    ]


@pytest.mark.parametrize(("role", "template", "overrides"), _template_cases())
def test_templates_render_as_ansible_does(role: str, template: str,
                                          overrides: dict[str, Any]) -> None:
    pytest.importorskip("ansible", reason="ansible-core is a dev dependency")
    from tectum.providers.host.templates import render

    module = _role(role)
    variables = {**module.DEFAULTS, **module.VARS_DEBIAN, **MANAGED, **overrides}
    path = GALLERY / role / "templates" / template
    expected = _ansible_render(path, dict(variables))
    got = render(str(path), dict(variables)).encode("utf-8")
    assert got == expected
    assert got.strip(), "the template rendered nothing"


def test_gallery_validates_with_its_example_inventory(tmp_path: Path) -> None:
    """The gallery as shipped: its inventory.example.toml, copied to inventory.toml, is a valid
    inventory and every role evaluates (up to its first fact, which validate does not know)."""
    root = tmp_path / "gallery"
    shutil.copytree(GALLERY, root, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(root / "inventory.example.toml", root / "inventory.toml")
    out = run_tectum("validate", str(root))
    assert out.returncode == 0, out.output
    for role, host in (("memcached", "cache-1"), ("redis", "kv-1"), ("nginx", "web-1")):
        assert f"Role '{role}' on host '{host}' decides on the fact os.family" in out.output, \
            out.output
