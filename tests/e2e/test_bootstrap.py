"""``tectum bootstrap`` on fresh test-fleet hosts (tests.harness.fleet: minbase Debian, no
Python): the real CLI installs python3, tectum (a wheel of this checkout, its dependencies from
a wheelhouse built once on this machine and cached) and the agent as a service, configured to
follow a git repository served by ``git daemon`` on the fleet's bridge and to report to a
private PostgreSQL that listens on the bridge too (password authentication for the bridge net:
the DSN with its password reaches each host only in its 0600 ``/etc/tectum/agent.env``).

``TECTUM_TEST_BOOTSTRAP_HOSTS=1`` runs the fleet test on one init-less host (and the systemd
one) instead of five, to try changes quickly.

The fast tests at the end need no host: bad input is refused before anything is built or
reached, the settings file survives any value through the shell that reads it, the scripts
parse, and the same source gives the same wheel digest (what makes a second bootstrap a no-op).

The repository's project targets ``local``: each agent manages one file on its own host, in a
workspace of its own (``--workspace '{host}'``) of the shared database. The agents start in
``apply`` mode (they put the file there), are bootstrapped again into ``remediate`` mode (the
settings changed, so the service restarts), a third bootstrap changes nothing, and a hand edit
on one host is put back within interval + splay (+ slack). Everything goes at the end: the
agents are stopped with ``service tectum-agent stop``, then the hosts, git daemon (by pid) and
the cluster.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
import subprocess
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tectum.runs import PostgresRunStore, RunReport
from tests.backends.conftest import Cluster, _pg_bindir
from tests.conftest import run_tectum
from tests.harness.fleet import BRIDGE_ADDRESS, NET_PREFIX, Fleet
from tests.harness.systemd_host import SystemdHost

FLEET = [
    pytest.mark.fleet,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the fleet harness needs root"),
]

HOSTS = int(os.environ.get("TECTUM_TEST_BOOTSTRAP_HOSTS", "5"))
#: dependency wheels built once on this machine (the hosts run the same Debian Python)
WHEELHOUSE = Path(os.environ.get("TECTUM_TEST_CACHE", "/var/cache/tectum-test")) / "wheelhouse"
MANAGED = "/etc/tectum-bootstrap-demo.conf"
CONTENT = "managed by the tectum agent\n"
INTERVAL, SPLAY = 2.0, 1.0


def _free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


@dataclass
class Database:
    cluster: Cluster
    dsn: str  # the agents' DSN: the bridge address, a password
    password: str


@contextlib.contextmanager
def database() -> Iterator[Database]:
    """A private cluster listening on 127.0.0.1 and the bridge; the bridge net must log in
    with a password (scram-sha-256) as the role ``agent``."""
    cluster = Cluster(_pg_bindir(), settings={
        "listen_addresses": f"127.0.0.1,{BRIDGE_ADDRESS}",
        "password_encryption": "scram-sha-256"})
    try:
        cluster.start()
        password = secrets.token_urlsafe(18)
        with (cluster.data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {NET_PREFIX}0/24 scram-sha-256\n")
        cluster.run(str(cluster.bindir / "pg_ctl"), "-D", str(cluster.data), "reload")
        import psycopg

        with psycopg.connect(cluster.dsn, autocommit=True) as conn:
            conn.execute(f"CREATE ROLE agent LOGIN SUPERUSER PASSWORD '{password}'")
        dsn = (f"host={BRIDGE_ADDRESS} port={cluster.port} dbname=tectum_test user=agent "
               f"password={password} connect_timeout=5")
        yield Database(cluster, dsn, password)
    finally:
        cluster.stop()


@contextlib.contextmanager
def git_daemon(tmp: Path) -> Iterator[str]:
    """A bare repository with the agents' project (branch main), served by ``git daemon`` on
    the bridge address; its URL."""
    base = tmp / "git"
    bare = base / "infra.git"
    work = tmp / "work"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    work.mkdir()
    (work / "tectum.toml").write_text('[state]\nbackend = "postgres"\n')
    (work / "stack.py").write_text(
        "from tectum.host import File\n\n"
        f"File('demo', path={MANAGED!r}, content={CONTENT!r}, mode='0644')\n")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "demo"],
                 ["push", "-q", str(bare), "main"]):
        subprocess.run(["git", "-C", str(work), *args], check=True, env=env,
                       capture_output=True)
    port = _free_port(BRIDGE_ADDRESS)
    log = (tmp / "git-daemon.log").open("wb")
    daemon = subprocess.Popen(
        ["git", "daemon", "--export-all", "--reuseaddr", "--informative-errors",
         f"--base-path={base}", f"--listen={BRIDGE_ADDRESS}", f"--port={port}", str(base)],
        stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(
                    (BRIDGE_ADDRESS, port), timeout=0.5):
                break
            assert daemon.poll() is None and time.monotonic() < deadline, \
                (tmp / "git-daemon.log").read_text()
            time.sleep(0.1)
        yield f"git://{BRIDGE_ADDRESS}:{port}/infra.git"
    finally:
        daemon.terminate()  # by its pid
        try:
            daemon.wait(timeout=10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(timeout=10)
        log.close()


def inventory(fleet: Fleet, sd: SystemdHost, extra: str = "") -> str:
    first = fleet.hosts[0]
    lines = ["[defaults]", f'key = "{first.key_path}"', f'known_hosts = "{first.known_hosts}"',
             "connect_timeout = 5", ""]
    for h in fleet.hosts:
        lines += [f"[hosts.{h.name}]", f'address = "{h.address}"', f"port = {h.port}", ""]
    lines += [f"[hosts.{sd.name}]", f'address = "{sd.address}"', f"port = {sd.port}",
              f'key = "{sd.key_path}"', f'known_hosts = "{sd.known_hosts}"', ""]
    return "\n".join(lines) + extra


def latest(dsn: str) -> dict[str, RunReport]:
    store = PostgresRunStore(dsn)
    try:
        return {r.host: r for r in store.latest()}
    finally:
        store.close()


def wait_for(what: str, check: object, timeout: float) -> float:
    """Poll ``check()`` until truthy; the seconds it took. Fails naming ``what``."""
    assert callable(check)
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            pytest.fail(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.25)
    return time.monotonic() - start


@dataclass
class World:
    fleet: Fleet
    sd: SystemdHost  # a host with systemd as PID 1 (the unit path)
    db: Database
    url: str


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    names = [f"boot{i + 1}" for i in range(HOSTS)]
    with Fleet(names=names, apt=True) as fleet, SystemdHost("bootsd") as sd, \
            database() as db, git_daemon(tmp_path) as url:
        # the systemd host gets the fleet's apt proxy (its package lists: bootstrap's
        # `apt-get update` after a failed first install)
        proxy = fleet.run(names[0], "cat /etc/apt/apt.conf.d/01tectum-proxy", check=True)
        sd.run("cat > /etc/apt/apt.conf.d/01tectum-proxy", input=proxy.stdout, check=True)
        try:
            yield World(fleet, sd, db, url)
        finally:
            for h in fleet.hosts:  # the agents go first (they hold connections to db)
                fleet.run(h.name, "service tectum-agent stop", timeout=60)
            sd.run("systemctl stop tectum-agent", timeout=60)


@FLEET[0]
@FLEET[1]
@FLEET[2]
def test_bootstrap_fleet_hosts_report_and_remediate(tmp_path: Path, world: World) -> None:
    fleet, sd, db, url = world.fleet, world.sd, world.db, world.url
    names = [h.name for h in fleet.hosts]
    every = [*names, sd.name]
    total = len(every)
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "inventory.toml").write_text(inventory(fleet, sd))
    env = {"TECTUM_PG_CONN_STR": db.dsn}
    # one wheel of this checkout for every run (--from): the same tectum each time, even while
    # the checkout is being edited
    from tectum.bootstrap import build_wheels

    wheel = build_wheels(None, str(tmp_path / "wheel"), None).tectum

    def bootstrap(mode: str, *more: str, code: int = 0) -> tuple[str, float]:
        t0 = time.monotonic()
        done = run_tectum("bootstrap", "all", "--dir", str(proj), "--repo", url,
                          "--interval", f"{INTERVAL:g}s", "--splay", f"{SPLAY:g}s",
                          "--mode", mode, "--workspace", "{host}", "--from", str(wheel),
                          "--wheelhouse", str(WHEELHOUSE), *more, env=env, timeout=900)
        out = done.stdout + done.stderr
        print(out)
        assert done.returncode == code, out
        assert db.password not in out and "Traceback" not in out
        assert code or env["TECTUM_PG_CONN_STR"] != db.dsn or "not reachable" not in out, out
        return out, time.monotonic() - t0

    # fresh: no Python, no git
    bare = fleet.run(names[0], "command -v python3 git")
    assert bare.stdout == "" and bare.returncode != 0, bare.stdout

    out, took = bootstrap("apply")
    assert f"Hosts: {total} changed, 0 ok, 0 failed." in out, out
    for name in every:
        assert f"{name}: started tectum-agent" in out, out
        assert f"{name}: installed python3, python3-venv, git (apt)" in out, out
    for name in names:
        assert f"{name}: wrote the init script /etc/init.d/tectum-agent" in out, out
        assert re.search(rf"^{name}: \d+ change\(s\), agent running \(sysv\)$", out, re.M), out
    assert f"{sd.name}: wrote the unit /etc/systemd/system/tectum-agent.service" in out, out
    assert re.search(rf"^{sd.name}: \d+ change\(s\), agent running \(systemd\)$", out,
                     re.M), out
    print(f"first bootstrap of {total} hosts: {took:.1f} s")

    # every agent applies its file and reports to the shared database
    took = wait_for(f"all {total} hosts report a successful run", lambda: (
        len(got := latest(db.dsn)) == total
        and all(r.status in ("changed", "unchanged") for r in got.values())), 120)
    print(f"all hosts reported after {took:.1f} s")
    reports = latest(db.dsn)
    assert sorted(reports) == sorted(every)
    assert {r.workspace for r in reports.values()} == set(every)  # a workspace per host
    assert sd.systemctl("is-enabled", "tectum-agent").stdout.strip() == "enabled"
    for name in every:
        def on(command: str, name: str = name) -> subprocess.CompletedProcess[str]:
            return sd.run(command) if name == sd.name else fleet.run(name, command)

        got = on(f"cat {MANAGED}")
        assert got.stdout == CONTENT, (name, got.stdout, got.stderr)
        # the settings file holds the DSN: root only; no command line shows the password
        mode = on("stat -c '%a %U' /etc/tectum/agent.env").stdout.strip()
        assert mode == "600 root"
        ps = on("cat /proc/[0-9]*/cmdline | tr '\\0' ' '").stdout
        assert "tectum agent" in ps and db.password not in ps

    # into remediate mode: only the settings change, and the agents restart
    out, _ = bootstrap("remediate")
    assert f"Hosts: {total} changed, 0 ok, 0 failed." in out, out
    assert "installed" not in out, out
    for name in every:
        assert f"{name}: updated the agent's settings /etc/tectum/agent.env" in out, out
        assert f"{name}: restarted tectum-agent" in out, out

    # the same again: nothing to change; a host that cannot be reached fails alone
    ghost = (f'[hosts.ghost]\naddress = "{fleet.hosts[0].address}"\nport = 1\n')
    (proj / "ghost.toml").write_text(inventory(fleet, sd, ghost))
    out, took = bootstrap("remediate", "-i", str(proj / "ghost.toml"), code=1)
    assert f"Hosts: 0 changed, {total} ok, 1 failed." in out, out
    assert "Bootstrap failed on ghost" in out, out
    for name in every:
        assert f"{name}: ok, nothing to change" in out, out
    print(f"no-op bootstrap: {took:.1f} s")

    # a hand change is put back within interval + splay (+ a cycle's time and slack)
    victim = names[-1]
    since = time.time()
    fleet.run(victim, f"echo 'changed by hand' > {MANAGED}", check=True)
    took = wait_for(f"{victim}: the hand change is put back", lambda: fleet.run(
        victim, f"cat {MANAGED}").stdout == CONTENT, INTERVAL + SPLAY + 15)
    print(f"hand change put back after {took:.1f} s")

    store = PostgresRunStore(db.dsn)
    try:
        def corrections() -> list[RunReport]:
            return [r for r in store.recent(host=victim, status="drift-corrected", limit=5)
                    if r.started_at >= since - INTERVAL - SPLAY]

        wait_for("the correction is reported", corrections, 10)
        report = corrections()[0]
    finally:
        store.close()
    assert report.mode == "remediate" and report.corrective == 1, report
    assert report.drift == ("file.demo",), report

    # in report mode a hand change is only reported (drift-found), never put back
    out, _ = bootstrap("report")
    assert f"Hosts: {total} changed, 0 ok, 0 failed." in out, out
    victim = names[0]
    fleet.run(victim, f"echo 'changed by hand' > {MANAGED}", check=True)
    since = time.time()  # (a cycle started since then sees the change)
    store = PostgresRunStore(db.dsn)
    try:
        def found() -> list[RunReport]:
            return [r for r in store.recent(host=victim, status="drift-found", limit=5)
                    if r.started_at >= since]

        wait_for(f"{victim}: the drift is reported", found, INTERVAL + SPLAY + 15)
        assert found()[0].drift == ("file.demo",) and found()[0].mode == "report"
        time.sleep(INTERVAL + SPLAY)  # (another cycle or so: still not put back)
        assert not [r for r in store.recent(host=victim, limit=20)
                    if r.started_at >= since and r.status != "drift-found"]
    finally:
        store.close()
    assert fleet.run(victim, f"cat {MANAGED}").stdout == "changed by hand\n"

    # a DSN the hosts cannot log in with: a warning per host (masked), the agents still run
    wrong = secrets.token_urlsafe(18)
    env["TECTUM_PG_CONN_STR"] = db.dsn.replace(db.password, wrong)
    out, _ = bootstrap("report")
    assert wrong not in out, out
    assert out.count("Warning: Database not reachable") == total, out
    assert "password authentication failed" in out, out

    # the services stop cleanly (SIGTERM: the agent finishes its cycle and exits)
    for name in names:
        stop = fleet.run(name, "service tectum-agent stop; service tectum-agent status; "
                         "test ! -e /run/tectum-agent.pid", timeout=200)
        assert stop.returncode == 0 and "tectum-agent is not running" in stop.stdout, stop
        log = fleet.run(name, "cat /var/log/tectum-agent.log").stdout
        assert "stopped: state is saved" in log and wrong not in log, log[-2000:]
    sd.run("systemctl stop tectum-agent", check=True, timeout=200)
    assert sd.systemctl("is-active", "tectum-agent").stdout.strip() == "inactive"


# ------------------------------------------------------------------ fast: no host needed

def test_bad_input_is_refused_before_anything_is_done(tmp_path: Path) -> None:
    (tmp_path / "inventory.toml").write_text('[hosts.web-1]\naddress = "192.0.2.1"\n')
    base = ("bootstrap", "--dir", str(tmp_path), "--repo", "git://192.0.2.9/x.git")
    cases = [
        ((*base, "nosuch"), "Unknown host or group", "'nosuch'"),
        ((*base, "web-1", "--interval", "0s"), "Invalid interval", "--interval"),
        ((*base, "web-1", "--splay", "soon"), "Invalid duration", "'soon'"),
        ((*base, "web-1", "--pip-env", "PIP_INDEX_URL"), "Invalid --pip-env", "NAME=VALUE"),
        ((*base, "web-1", "--pip-env", "1X=y"), "Invalid --pip-env", "'1X'"),
        ((*base, "local"), "No hosts", "tectum agent"),
        ((*base, "web-1", "--from", str(tmp_path / "none.whl")), "No such wheel", "none.whl"),
    ]
    for args, summary, detail in cases:
        done = run_tectum(*args, timeout=120)
        out = done.stdout + done.stderr
        assert done.returncode == 1, (args, out)
        assert summary in out and detail in out and "Traceback" not in out, (args, out)
        assert "Preparing" not in out, (args, out)  # refused before anything was built


def test_settings_file_keeps_any_value_through_the_shell(tmp_path: Path) -> None:
    from tectum.bootstrap import BootstrapOptions

    dsn = "host=db port=5432 password='it''s $HOME `id` \\ \"q\" ;|&' user=agent"
    opts = BootstrapOptions(repo="git://h/x y.git", branch="main", path="live/web",
                            interval="2s", splay="1s", mode="report", workspace="ws-{host}",
                            pg_conn_str=dsn)
    env = tmp_path / "agent.env"
    env.write_text(opts.env_file("web-1"))
    names = ["TECTUM_PG_CONN_STR", "TECTUM_AGENT_REPO", "TECTUM_AGENT_WORKSPACE",
             "TECTUM_AGENT_NAME", "TECTUM_AGENT_MODE"]
    script = f". {env}; " + "; ".join(f'printf "%s\\0" "${n}"' for n in names)
    got = subprocess.run(["sh", "-c", script], capture_output=True, check=True).stdout
    assert got.decode().split("\0")[:-1] == [dsn, "git://h/x y.git", "ws-web-1", "web-1",
                                              "report"]


def test_the_scripts_parse() -> None:
    from tectum.bootstrap import INIT, RUNNER_SCRIPT

    for script in (INIT, RUNNER_SCRIPT):
        done = subprocess.run(["sh", "-n"], input=script, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr


def test_the_same_source_gives_the_same_wheel_digest(tmp_path: Path) -> None:
    from tectum.bootstrap import build_wheels

    one = build_wheels(None, str(tmp_path / "a"), None)
    two = build_wheels(None, str(tmp_path / "b"), None)
    assert one.tectum.name.startswith("tectum-") and one.deps == ()
    assert one.digest == two.digest
    with zipfile.ZipFile(one.tectum) as zf:
        assert "tectum/bootstrap.py" in zf.namelist()
