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
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
#: the first host's sudoer (bootstrap reaches it with become)
DEPLOY, BECOME_ENV = "deploy", "TECTUM_TEST_BECOME_PASSWORD"
BECOME_PASSWORD = secrets.token_urlsafe(12)


def _free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def listening(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Wait until ``proc`` accepts connections on the bridge's ``port`` (10 s); fails with
    its log when it exits or does not."""
    deadline = time.monotonic() + 10
    while True:
        with contextlib.suppress(OSError), socket.create_connection(
                (BRIDGE_ADDRESS, port), timeout=0.5):
            return
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)


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
    for args in (["init", "-q", "-b", "main"], ["remote", "add", "origin", str(bare)]):
        subprocess.run(["git", "-C", str(work), *args], check=True, capture_output=True)
    push(work, CONTENT)
    port = _free_port(BRIDGE_ADDRESS)
    log = (tmp / "git-daemon.log").open("wb")
    daemon = subprocess.Popen(
        ["git", "daemon", "--export-all", "--reuseaddr", "--informative-errors",
         f"--base-path={base}", f"--listen={BRIDGE_ADDRESS}", f"--port={port}", str(base)],
        stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    try:
        listening(daemon, port, tmp / "git-daemon.log")
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
    """Every host as root, but the first: as the sudoer ``deploy`` with ``become`` (password
    in ``$BECOME_ENV``)."""
    first = fleet.hosts[0]
    lines = ["[defaults]", f'key = "{first.key_path}"', f'known_hosts = "{first.known_hosts}"',
             "connect_timeout = 5", ""]
    for h in fleet.hosts:
        lines += [f"[hosts.{h.name}]", f'address = "{h.address}"', f"port = {h.port}"]
        if h is first:
            lines += [f'user = "{DEPLOY}"', "become = true",
                      f'become_password_env = "{BECOME_ENV}"']
        lines.append("")
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
    work: Path  # the git work tree whose main is pushed to ``url``
    index: str  # WHEELHOUSE served over HTTP on the bridge (a --find-links URL)


@contextlib.contextmanager
def wheel_index(directory: Path, log: Path) -> Iterator[str]:
    """``directory`` served by ``python3 -m http.server`` on the bridge address: a page of
    links pip's ``--find-links`` reads, as a host's pip reaches an index over the network."""
    port = _free_port(BRIDGE_ADDRESS)
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "http.server", "--bind", BRIDGE_ADDRESS, "--directory",
             str(directory), str(port)], stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        try:
            listening(server, port, log)
            yield f"http://{BRIDGE_ADDRESS}:{port}/"
        finally:
            server.terminate()  # by its pid
            server.wait(timeout=10)


def push(work: Path, content: str) -> str:
    """Commit ``stack.py`` managing the demo file with ``content`` and push it; the commit."""
    (work / "stack.py").write_text(
        "from tectum.host import File\n\n"
        f"File('demo', path={MANAGED!r}, content={content!r}, mode='0644')\n")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}
    for args in (["add", "-A"], ["commit", "-q", "-m", "demo"], ["push", "-q", "origin", "main"]):
        subprocess.run(["git", "-C", str(work), *args], check=True, env=env,
                       capture_output=True)
    return subprocess.run(["git", "-C", str(work), "rev-parse", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    names = [f"boot{i + 1}" for i in range(HOSTS)]
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    with Fleet(names=names, apt=True) as fleet, SystemdHost("bootsd") as sd, \
            database() as db, git_daemon(tmp_path) as url, \
            wheel_index(WHEELHOUSE, tmp_path / "index.log") as index:
        # the systemd host gets the fleet's apt proxy (its package lists: bootstrap's
        # `apt-get update` after a failed first install)
        proxy = fleet.run(names[0], "cat /etc/apt/apt.conf.d/01tectum-proxy", check=True)
        sd.run("cat > /etc/apt/apt.conf.d/01tectum-proxy", input=proxy.stdout, check=True)
        # the first host is reached as a sudoer with a password (become), as an admin set it up
        got = fleet.run(names[0], "apt-get update -q >/dev/null 2>&1; DEBIAN_FRONTEND="
                        "noninteractive apt-get install -y -q --no-install-recommends sudo "
                        f">/dev/null 2>&1 && useradd -m -s /bin/sh -G sudo {DEPLOY} && "
                        f"install -d -m 700 -o {DEPLOY} -g {DEPLOY} /home/{DEPLOY}/.ssh && "
                        f"install -m 600 -o {DEPLOY} -g {DEPLOY} /root/.ssh/authorized_keys "
                        f"/home/{DEPLOY}/.ssh/authorized_keys", timeout=600)
        assert got.returncode == 0, got.stdout + got.stderr
        fleet.run(names[0], "chpasswd", input=f"{DEPLOY}:{BECOME_PASSWORD}\n", check=True)
        try:
            yield World(fleet, sd, db, url, tmp_path / "work", index)
        finally:
            for h in fleet.hosts:  # the agents go first (they hold connections to db)
                fleet.run(h.name, "service tectum-agent stop", timeout=60)
            sd.run("systemctl stop tectum-agent", timeout=60)


@FLEET[0]
@FLEET[1]
@FLEET[2]
def test_bootstrap_fleet_hosts_report_remediate_and_wait_for_approval(
        tmp_path: Path, world: World) -> None:
    fleet, sd, db, url = world.fleet, world.sd, world.db, world.url
    names = [h.name for h in fleet.hosts]
    every = [*names, sd.name]
    total = len(every)
    # the first host: reached as a sudoer (become); its pip installs the dependencies from an
    # index on the network (--pip-env), the others from the wheelhouse copied over
    via_pip, housed = names[0], [*names[1:], sd.name]
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "inventory.toml").write_text(inventory(fleet, sd))
    env = {"TECTUM_PG_CONN_STR": db.dsn, BECOME_ENV: BECOME_PASSWORD}
    # one wheel of this checkout for every run (--from): the same tectum each time, even while
    # the checkout is being edited
    from tectum.bootstrap import build_wheels

    wheel = build_wheels(None, str(tmp_path / "wheel"), None).tectum

    def bootstrap(mode: str, *more: str, code: int = 0, inventory_file: Path | None = None,
                  from_wheel: Path | None = None) -> tuple[str, str, float]:
        """Both bootstraps at once (the wheelhouse's hosts, and the one whose pip fetches);
        their outputs."""
        t0 = time.monotonic()
        common = ["bootstrap", "--dir", str(proj), "--repo", url, "--interval",
                  f"{INTERVAL:g}s", "--splay", f"{SPLAY:g}s", "--mode", mode, "--workspace",
                  "{host}", "--from", str(from_wheel or wheel), *more]
        targets = list(housed)
        if inventory_file is not None:
            common += ["-i", str(inventory_file)]
            targets.append("ghost")
        runs = [([*targets, "--wheelhouse", str(WHEELHOUSE)], code),
                ([via_pip, "--pip-env", "PIP_NO_INDEX=1", "--pip-env",
                  f"PIP_FIND_LINKS={world.index}", "--pip-env",
                  f"PIP_TRUSTED_HOST={BRIDGE_ADDRESS}"], 0)]
        with ThreadPoolExecutor(2) as pool:
            done = list(pool.map(lambda r: run_tectum(*common[:1], *r[0], *common[1:],
                                                      env=env, timeout=900), runs))
        outs = []
        for (_, want), got in zip(runs, done, strict=True):
            out = got.stdout + got.stderr
            print(out)
            assert got.returncode == want, out
            assert db.password not in out and BECOME_PASSWORD not in out, out
            assert "Traceback" not in out, out
            outs.append(out)
        return outs[0], outs[1], time.monotonic() - t0

    def on(name: str, command: str) -> subprocess.CompletedProcess[str]:
        return sd.run(command) if name == sd.name else fleet.run(name, command)

    # fresh: no Python, no git
    bare = fleet.run(names[0], "command -v python3 git")
    assert bare.stdout == "" and bare.returncode != 0, bare.stdout

    out, pip_out, took = bootstrap("apply")
    assert f"Hosts: {total - 1} changed, 0 ok, 0 failed." in out, out
    assert "Hosts: 1 changed, 0 ok, 0 failed." in pip_out, pip_out
    both = out + pip_out
    for name in every:
        assert f"{name}: started tectum-agent" in both, both
        assert f"{name}: installed python3, python3-venv, git (apt)" in both, both
    for name in names:
        assert f"{name}: wrote the init script /etc/init.d/tectum-agent" in both, both
        assert re.search(rf"^{name}: \d+ change\(s\), agent running \(sysv\)$", both,
                         re.M), both
    assert re.search(rf"^\s*{via_pip}: installed tectum-\S+\.whl into ", pip_out, re.M), pip_out
    assert re.search(rf"^\s*{housed[0]}: installed tectum-\S+\.whl and \d+ dependency wheel",
                     out, re.M), out
    assert f"{sd.name}: wrote the unit /etc/systemd/system/tectum-agent.service" in out, out
    assert re.search(rf"^{sd.name}: \d+ change\(s\), agent running \(systemd\)$", out,
                     re.M), out
    print(f"first bootstrap of {total} hosts: {took:.1f} s")
    # the sudoer's host: what bootstrap made is root's
    owners = fleet.run(via_pip, "stat -c '%U %a' /opt/tectum/venv/bin/tectum "
                       "/etc/tectum/agent.env").stdout.split("\n")
    assert owners[:2] == ["root 755", "root 600"], owners

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
        got = on(name, f"cat {MANAGED}")
        assert got.stdout == CONTENT, (name, got.stdout, got.stderr)
        # the settings file holds the DSN: root only; no command line shows the password
        mode = on(name, "stat -c '%a %U' /etc/tectum/agent.env").stdout.strip()
        assert mode == "600 root"
        ps = on(name, "cat /proc/[0-9]*/cmdline | tr '\\0' ' '").stdout
        assert "tectum agent" in ps and db.password not in ps

    # into remediate mode: only the settings change, and the agents restart
    out, pip_out, _ = bootstrap("remediate")
    assert f"Hosts: {total - 1} changed, 0 ok, 0 failed." in out, out
    assert "Hosts: 1 changed, 0 ok, 0 failed." in pip_out, pip_out
    assert "installed" not in out + pip_out, out + pip_out
    for name in every:
        assert f"{name}: updated the agent's settings /etc/tectum/agent.env" in out + pip_out
        assert f"{name}: restarted tectum-agent" in out + pip_out

    # the same again: nothing to change; a host that cannot be reached fails alone
    ghost = (f'[hosts.ghost]\naddress = "{fleet.hosts[0].address}"\nport = 1\n')
    (proj / "ghost.toml").write_text(inventory(fleet, sd, ghost))
    out, pip_out, took = bootstrap("remediate", code=1, inventory_file=proj / "ghost.toml")
    assert f"Hosts: 0 changed, {total - 1} ok, 1 failed." in out, out
    assert "Hosts: 0 changed, 1 ok, 0 failed." in pip_out, pip_out
    assert "Bootstrap failed on ghost" in out, out
    for name in every:
        assert f"{name}: ok, nothing to change" in out + pip_out
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

    # in report mode a hand change is only reported (drift-found), never put back; and a
    # tectum wheel of other content is installed over the one there (only it is copied)
    rebuilt = tmp_path / "rebuilt" / wheel.name
    rebuilt.parent.mkdir()
    shutil.copy(wheel, rebuilt)
    with zipfile.ZipFile(rebuilt, "a") as zf:
        zf.writestr("tectum/_rebuilt.txt", "another build\n")
    out, pip_out, _ = bootstrap("report", from_wheel=rebuilt)
    assert f"Hosts: {total - 1} changed, 0 ok, 0 failed." in out, out
    for name in every:
        assert re.search(rf"^\s*{name}: installed {re.escape(wheel.name)}", out + pip_out,
                         re.M), out + pip_out
    assert fleet.run(names[1], "ls /opt/tectum/venv/lib/python3*/site-packages/tectum/"
                     "_rebuilt.txt").returncode == 0
    victim = names[1]
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

    # GitOps with a person in the loop: the agents apply only what an approver signed
    approve_new_commit_on_every_host(world, tmp_path, env, every, bootstrap)

    # a DSN the hosts cannot log in with: a warning per host (masked), the agents still run
    wrong = secrets.token_urlsafe(18)
    env["TECTUM_PG_CONN_STR"] = db.dsn.replace(db.password, wrong)
    out, pip_out, _ = bootstrap("report")
    assert wrong not in out + pip_out, out + pip_out
    assert (out + pip_out).count("Warning: Database not reachable") == total, out + pip_out
    assert "password authentication failed" in out, out
    assert "removed /etc/tectum/approvers (no longer given)" in out + pip_out

    # the services stop cleanly (SIGTERM: the agent finishes its cycle and exits)
    for name in names:
        stop = fleet.run(name, "service tectum-agent stop; service tectum-agent status; "
                         "test ! -e /run/tectum-agent.pid", timeout=200)
        assert stop.returncode == 0 and "tectum-agent is not running" in stop.stdout, stop
        log = fleet.run(name, "cat /var/log/tectum-agent.log").stdout
        assert "stopped: state is saved" in log and wrong not in log, log[-2000:]
    sd.run("systemctl stop tectum-agent", check=True, timeout=200)
    assert sd.systemctl("is-active", "tectum-agent").stdout.strip() == "inactive"


def approve_new_commit_on_every_host(world: World, tmp_path: Path,
                                     env: dict[str, str], every: list[str],
                                     bootstrap: Callable[..., tuple[str, str, float]]) -> None:
    """Agents in apply mode with --require-approval and --approvers: a new commit appears as
    one pending approval per host in the status page as headless chromium renders it; after
    ``tectum approve --sign-with`` of those runs every host applies it, and none is left
    pending."""
    from tests.serve.test_page_in_browser import rendered
    from tests.serve.test_serve import section, start

    key = tmp_path / "approver"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ops", "-f", str(key)],
                   check=True)
    approvers = tmp_path / "approvers"
    approvers.write_text(f"ops@example.org {key.with_suffix('.pub').read_text().strip()}\n")
    out, pip_out, _ = bootstrap("apply", "--require-approval", "--approvers", str(approvers))
    for name in every:
        assert f"{name}: wrote the approvers /etc/tectum/approvers" in out + pip_out
        assert f"{name}: restarted tectum-agent" in out + pip_out
    # (the agents settle first: report mode's hand change is put back as drift)
    names = [h.name for h in world.fleet.hosts]
    wait_for("every host's file as committed", lambda: all(
        world.fleet.run(n, f"cat {MANAGED}").stdout == CONTENT for n in names), 30)

    changed = "managed by the tectum agent, approved\n"
    commit = push(world.work, changed)
    since = time.time()

    def pending() -> dict[str, RunReport]:
        got = latest(world.db.dsn)
        return {h: r for h, r in got.items() if r.status == "pending" and r.commit == commit}

    took = wait_for("a pending run on every host", lambda: len(pending()) == len(every), 60)
    print(f"every host waits for approval after {took:.1f} s")
    waiting = pending()
    server = start(world.work, env=env)  # (the infrastructure repository's checkout)
    try:
        page = rendered(server.url, tmp_path / "chromium")
        approvals = section(page, "approvals")
        # (one row per host: its newest pending run; at --interval 2s each cycle reports a
        # new run waiting with the same plan, which any of them approves)
        rows = approvals.split("<tr>")[2:]
        assert len(rows) == len(every), approvals
        for name in every:
            row = next(r for r in rows if f"<td>{name}</td>" in r)
            assert str(waiting[name].plan_digest) in row and "tectum approve " in row, row
        # nothing was applied while it waited
        assert world.fleet.run(every[0], f"cat {MANAGED}").stdout == CONTENT

        approved = run_tectum("approve", *(r.id for r in waiting.values()), "--project",
                              str(world.work), "--sign-with", str(key), env=env)
        assert approved.returncode == 0, approved.output

        def converged() -> bool:
            # (a host's run that applied it; its later cycles report unchanged)
            store = PostgresRunStore(world.db.dsn)
            try:
                return all(any(r.started_at >= since and r.commit == commit
                               for r in store.recent(host=h, status="changed", limit=5))
                           for h in every)
            finally:
                store.close()

        took = wait_for("every host applied the approved plan", converged, 60)
        print(f"every host applied the approved plan {took:.1f} s after approval")
        for name in names:
            assert world.fleet.run(name, f"cat {MANAGED}").stdout == changed, name
        assert world.sd.run(f"cat {MANAGED}").stdout == changed
        store = PostgresRunStore(world.db.dsn)
        try:
            for run in waiting.values():
                done = store.get(run.id)
                assert done is not None and done.approved_by == "ops@example.org", done
        finally:
            store.close()
        page = rendered(server.url, tmp_path / "chromium")
        approvals = section(page, "approvals")
        assert "tectum approve " not in approvals.replace("tectum approve RUN_ID", ""), \
            approvals
    finally:
        assert server.stop() == 0


# ------------------------------------------------------------------ fast: no host needed

def test_bad_input_is_refused_before_anything_is_done(tmp_path: Path) -> None:
    (tmp_path / "inventory.toml").write_text('[hosts.web-1]\naddress = "192.0.2.1"\n')

    def hooks(line: str) -> Path:
        path = tmp_path / f"hooks-{secrets.token_hex(3)}.toml"
        path.write_text(f"[[webhooks]]\nurl = 'https://hooks.example/t'\n{line}\n")
        return path

    base = ("bootstrap", "--dir", str(tmp_path), "--repo", "git://192.0.2.9/x.git")
    cases = [
        ((*base, "nosuch"), "Unknown host or group", "'nosuch'"),
        ((*base, "web-1", "--interval", "0s"), "Invalid interval", "--interval"),
        ((*base, "web-1", "--splay", "soon"), "Invalid duration", "'soon'"),
        ((*base, "web-1", "--pip-env", "PIP_INDEX_URL"), "Invalid --pip-env", "NAME=VALUE"),
        ((*base, "web-1", "--pip-env", "1X=y"), "Invalid --pip-env", "'1X'"),
        ((*base, "local"), "No hosts", "tectum agent"),
        ((*base, "web-1", "--from", str(tmp_path / "none.whl")), "No such wheel", "none.whl"),
        ((*base, "web-1", "--approvers", str(tmp_path / "nope")), "Cannot read a file to copy",
         "--approvers"),
        ((*base, "web-1", "--allowed-signers", str(tmp_path / "inventory.toml")),
         "Allowed signers without signed commits", "--require-signed-commits"),
        ((*base, "web-1", "--encrypt-to", "age1nope"), "recipient", "age1nope"),
        ((*base, "web-1", "--webhooks", str(hooks("secret = 'x'"))),
         "Webhook secret in the project file", "secret_env"),
        ((*base, "web-1", "--webhooks", str(hooks("secret_env = 'TECTUM_TEST_UNSET_SECRET'"))),
         "TECTUM_TEST_UNSET_SECRET", "not set"),
        ((*base, "web-1", "--webhooks", str(hooks("secret_env = 'TECTUM_AGENT_MODE'"))),
         "Invalid webhook", "name the agent's settings use"),
    ]
    for args, summary, detail in cases:
        done = run_tectum(*args, timeout=120, env={"TECTUM_AGENT_MODE": "x" * 40})
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


def test_the_launcher_passes_every_setting_to_the_agent(tmp_path: Path) -> None:
    """The launcher as bootstrap writes it (its paths moved under tmp_path), with every agent
    option set: the argv the agent gets, each value one argument (an ssh-ed25519 recipient
    holds spaces; a glob character stays as written)."""
    import json

    from tectum import bootstrap as b

    signers = tmp_path / "signers"
    signers.write_text("ops@example.org ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA\n")
    hooks = tmp_path / "hooks.toml"
    hooks.write_text("[[webhooks]]\nurl = 'https://hooks.example/t'\n"
                     "secret_env = 'HOOK_SECRET'\n")
    ssh_key = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx4rQ3d0SwHj0u4pFvYb0dOqvyWm2dd8Pb8gxVoFDcm "
               "agent@web *")
    age_key = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOOK_SECRET", "s" * 40)
        opts = b.BootstrapOptions(repo="git://h/x.git", mode="apply", workspace="{host}",
                                  require_approval=True, encrypt_to=(ssh_key, age_key),
                                  require_signed_commits=True, allowed_signers=str(signers),
                                  approvers=str(signers), webhooks=str(hooks))
    assert set(opts.files) == {b.SIGNERS, b.APPROVERS, b.HOOKS}
    env = tmp_path / "agent.env"
    env.write_text(opts.env_file("web-1"))
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    fake = venv / "bin" / "tectum"  # prints the argv it got, and the secret it sees
    fake.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                    "print(json.dumps([sys.argv[1:], os.environ.get('HOOK_SECRET')]))\n")
    fake.chmod(0o755)
    runner = tmp_path / "agent-run"
    runner.write_text(b.RUNNER_SCRIPT.replace(b.ENV_FILE, str(env)).replace(b.VENV, str(venv)))
    runner.chmod(0o755)
    argv, secret = json.loads(subprocess.run([str(runner)], capture_output=True, text=True,
                                             check=True, cwd=tmp_path).stdout)
    assert secret == "s" * 40
    assert argv == [
        "agent", "--repo", "git://h/x.git", "--branch", "main", "--path", ".", "--interval",
        "30m", "--splay", "0s", "--mode", "apply", "--name", "web-1", "--workdir", b.WORKDIR,
        "--require-approval", "--require-signed-commits", "--allowed-signers", b.SIGNERS,
        "--approvers", b.APPROVERS, "--webhooks", b.HOOKS, "--workspace", "web-1",
        "--encrypt-to", ssh_key, "--encrypt-to", age_key]
    # none of them set: none passed
    env.write_text(b.BootstrapOptions(repo="git://h/x.git").env_file("web-1"))
    argv, _ = json.loads(subprocess.run([str(runner)], capture_output=True, text=True,
                                        check=True, cwd=tmp_path).stdout)
    assert argv[-2:] == ["--workdir", b.WORKDIR], argv


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


def test_a_host_python_other_than_the_wheelhouse_fails_before_anything_is_installed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The wheelhouse's compiled wheels are this machine's Python's: a host with another
    Python version or machine fails that host, naming both, before a wheel is copied (here
    the host is this machine through the local connector, its venv a link to this Python)."""
    import platform

    from tectum import bootstrap as b
    from tectum.providers.host.connector import LocalConnector

    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    monkeypatch.setattr(b, "VENV", str(venv))
    monkeypatch.setattr(b, "WHEELS", str(tmp_path / "wheels"))
    wheel = tmp_path / "dep-1.0-cp399-cp399-manylinux_2_17_x86_64.whl"
    wheel.write_bytes(b"")
    here = (f"{sys.version_info[0]}.{sys.version_info[1]}", platform.machine())
    host = b.HostBootstrap(LocalConnector(), "web-1", b.BootstrapOptions(repo="git://h/x"),
                           b.Wheels(wheel, (wheel,), "d", ("3.99", here[1])), lambda _: None)
    with pytest.raises(b.BootstrapError) as err:
        host.install(stamp="")
    assert (f"the host has Python {here[0]} on {here[1]}, but the wheelhouse's compiled "
            f"wheels are for Python 3.99 on {here[1]}") in str(err.value)
    assert "--pip-env PIP_INDEX_URL" in str(err.value)
    assert not (tmp_path / "wheels").exists()
    host.check_python(here)  # the same Python: no error


def test_only_wheels_not_on_the_host_are_copied(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A second copy sends only the wheel whose content changed, and a wheel no longer in the
    set is removed (the host: this machine through the local connector)."""
    from tectum import bootstrap as b
    from tectum.providers.host.connector import LocalConnector

    monkeypatch.setattr(b, "WHEELS", str(tmp_path / "host-wheels"))
    local = tmp_path / "local"
    local.mkdir()
    names = ["tectum-1-py3-none-any.whl", "a-1-py3-none-any.whl", "b-1-py3-none-any.whl"]
    for name in names:
        (local / name).write_bytes(name.encode())
    sent: list[str] = []

    class Counting(LocalConnector):
        def write_file(self, path: str, data: bytes, **kw: Any) -> None:
            sent.append(os.path.basename(path))
            super().write_file(path, data, **kw)

    def copy(*deps: str) -> list[str]:
        sent.clear()
        wheels = b.Wheels(local / names[0], tuple(local / d for d in deps), "d")
        b.HostBootstrap(Counting(), "web-1", b.BootstrapOptions(repo="git://h/x"), wheels,
                        lambda _: None).copy_wheels()
        return sorted(sent)

    assert copy(names[1], names[2]) == sorted(names)
    assert copy(names[1], names[2]) == []
    (local / names[2]).write_bytes(b"rebuilt")
    assert copy(names[1], names[2]) == [names[2]]
    assert copy(names[1]) == []
    assert sorted(p.name for p in (tmp_path / "host-wheels").iterdir()) == sorted(names[:2])
    assert (tmp_path / "host-wheels" / names[1]).read_bytes() == names[1].encode()
