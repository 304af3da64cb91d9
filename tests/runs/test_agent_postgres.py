"""Agents reporting to a shared PostgreSQL state database (a private cluster: these tests stop
it): reports kept locally while the database is down and sent when it is back; two agents on
one workspace take turns at its lock."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tectum.runs import PostgresRunStore
from tests.backends.conftest import Cluster, _pg_bindir
from tests.conftest import tectum_env
from tests.runs.test_agent import Repo, last_status

TOML = '[state]\nbackend = "postgres"\n'


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    # (durable commits: these tests crash the server, and what was committed must survive)
    made = Cluster(_pg_bindir(), settings={"fsync": "on", "synchronous_commit": "on",
                                           "full_page_writes": "on"})
    try:
        made.start()
        yield made
    finally:
        made.stop()


@pytest.fixture
def repo(tmp_path: Path, cluster: Cluster) -> Iterator[Repo]:
    made = Repo(tmp_path)
    (made.src / "tectum.toml").write_text(TOML)
    made.git("add", "-A")
    made.git("commit", "-q", "-m", "postgres backend")
    made.git("push", "-q", "--force", "origin", "HEAD:main")
    yield made
    with PostgresRunStore(cluster.dsn)._connection() as conn:  # (this test's reports go)
        conn.execute("DROP TABLE IF EXISTS runs, states, journal, lock_info")


def run_agent(repo: Repo, cluster: Cluster, *args: str, workdir: Path | None = None,
              name: str = "host-a") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tectum", "agent", "--repo", repo.url, "--workdir",
         str(workdir or repo.workdir), "--interval", "1s", "--name", name, "--once", *args],
        capture_output=True, text=True, timeout=180,
        env=tectum_env({"TECTUM_PG_CONN_STR": cluster.dsn}))


def test_reports_are_kept_while_the_database_is_down_and_sent_when_it_is_back(
        repo: Repo, cluster: Cluster) -> None:
    first = run_agent(repo, cluster, "--mode", "apply")
    assert "changed:" in first.stdout, first.stdout + first.stderr
    cluster.kill()
    try:
        down = run_agent(repo, cluster, "--mode", "remediate")
        assert down.returncode == 1
        assert "failed:" in down.stdout and "kept in" in down.stdout, down.stdout
        assert "Traceback" not in down.stdout + down.stderr
        spooled = list((repo.workdir / "spool").glob("*.json"))
        assert len(spooled) == 1
    finally:
        cluster.restart()
    back = run_agent(repo, cluster, "--mode", "remediate")
    assert "1 spooled report(s) sent" in back.stdout, back.stdout + back.stderr
    assert list((repo.workdir / "spool").glob("*.json")) == []
    store = PostgresRunStore(cluster.dsn)
    try:
        assert [r.status for r in store.recent()] == ["unchanged", "failed", "changed"]
        failed = store.recent(status="failed")[0]
        assert any("state database" in e.lower() or "reach" in e.lower()
                   for e in failed.errors), failed.errors
    finally:
        store.close()


def test_two_agents_on_one_workspace_take_turns_at_its_lock(
        repo: Repo, cluster: Cluster) -> None:
    marker = repo.world / "made"
    repo.commit("slow", stack=(
        "from tectum.host import Command, File\n"
        f"File('a', path='{repo.world}/a.txt', content='one\\n')\n"
        f"Command('slow', command=['sh', '-c', 'sleep 2; touch {marker}'], "
        f"creates='{marker}')\n"), push=True)
    cmd = [sys.executable, "-m", "tectum", "agent", "--repo", repo.url, "--interval", "1s",
           "--once", "--mode", "apply"]
    env = tectum_env({"TECTUM_PG_CONN_STR": cluster.dsn})
    procs = [subprocess.Popen([*cmd, "--workdir", str(repo.tmp / f"agent{i}"),
                               "--name", f"host-{i}"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=env)
             for i in range(2)]
    outs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    statuses = sorted(last_status_text(o) for o in outs)
    assert statuses == ["changed", "unchanged"], outs
    assert marker.exists() and repo.text() == "one\n"
    store = PostgresRunStore(cluster.dsn)
    try:
        assert sorted(r.host for r in store.latest()) == ["host-0", "host-1"]
    finally:
        store.close()


def last_status_text(out: str) -> str:
    class _R:
        stdout = out
        output = out
    return last_status(_R())  # type: ignore[arg-type]
