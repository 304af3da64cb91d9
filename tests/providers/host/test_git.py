"""``git_checkout`` for real on this machine: repositories made in ``tmp_path`` (commits,
tags, branches; reached as plain paths and ``file://`` URLs), checked out by the type's own
git commands; no mocks. Everything lives in ``tmp_path``."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tectum.diagnostics import DiagnosticError
from tectum.plans.plan import Action, ResourceChange
from tectum.providers.base import ApplyError, ReadItem
from tectum.providers.host.connector import LocalConnector
from tectum.providers.host.git import UNKNOWN_COMMIT, GitCheckoutType
from tests.conftest import run_tectum, tectum_env

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

# -- helpers (also used by tests/providers/cases/deploy.py) ---------------------------------

_AUTHOR = ["-c", "user.name=tectum test", "-c", "user.email=test@tectum.invalid",
           "-c", "safe.directory=*"]


def git(repo: str | Path, *args: str) -> str:
    """Run git in ``repo``; its output, stripped. Fails the test when git fails."""
    proc = subprocess.run(["git", *_AUTHOR, "-C", str(repo), *args], capture_output=True,
                          text=True, check=False, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"git {' '.join(args)}: {proc.stderr}"
    return proc.stdout.strip()


def commit(repo: str | Path, message: str) -> str:
    """A new commit on the current branch of ``repo`` (a line added to ``app.txt``)."""
    with open(os.path.join(repo, "app.txt"), "a", encoding="utf-8") as fh:
        fh.write(message + "\n")
    git(repo, "add", "app.txt")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def make_repo(path: Path) -> Path:
    """A repository at ``path`` on branch ``main``: one commit, tagged ``v1``."""
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    commit(path, "one")
    git(path, "tag", "v1")
    return path


@pytest.fixture
def conn() -> LocalConnector:
    return LocalConnector(log_path="")


@pytest.fixture
def rt() -> GitCheckoutType:
    return GitCheckoutType()


@pytest.fixture
def src(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "src")


def plan(rt: GitCheckoutType, conn: LocalConnector, attrs: dict[str, Any],
         prior: dict[str, Any] | None = None) -> ResourceChange:
    desired = rt.prepare(attrs, "/")
    obs = rt.read(conn, [ReadItem(desired, prior)])[0]
    action, changes = rt.plan(desired, obs, prior)
    return ResourceChange("git_checkout.app", "git_checkout", action,
                          rt.stored(obs) if obs is not None else None, desired, changes,
                          prior=prior)


def converge(rt: GitCheckoutType, conn: LocalConnector, attrs: dict[str, Any],
             prior: dict[str, Any] | None = None) -> tuple[ResourceChange, dict[str, Any]]:
    change = plan(rt, conn, attrs, prior)
    if change.action is Action.NOOP:
        assert prior is not None
        return change, prior
    record = rt.apply(conn, change)
    assert record is not None
    return change, record


def shown(change: ResourceChange) -> dict[str, tuple[Any, Any]]:
    return {c.name: (c.before, c.after) for c in change.changes}


def mutations(conn: LocalConnector, since: int = 0) -> list[dict[str, object]]:
    return [e for e in conn.log[since:] if e["mutating"]]


def head(dest: str | Path) -> str:
    return git(dest, "rev-parse", "HEAD")


#: ``python KILLER WORD PROJECT [after]``: ``tectum apply --auto-approve PROJECT`` that kills
#: itself (SIGKILL, as ``kill -9`` does) when the host connector is about to run a command
#: with the argument WORD (with ``after``: once that command has run) — a real kill of the
#: real run at a chosen step (also used by test_pip and test_download)
_KILLER = """\
import os, signal, sys
from tectum.providers.host import connector
word, project, when = sys.argv[1], sys.argv[2], sys.argv[3]
real = connector.LocalConnector.run
def run(self, argv, *args, **kwargs):
    if word not in [str(a) for a in argv]:
        return real(self, argv, *args, **kwargs)
    if when == "after":
        real(self, argv, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
connector.LocalConnector.run = run
from tectum.cli.main import main
sys.argv = ["tectum", "apply", "--auto-approve", project]
main()
"""


def apply_killed_at(word: str, project: Path, *, after: bool = False) -> None:
    """``tectum apply`` of ``project``, killed (SIGKILL) just before (``after``: just after)
    it runs a command with the argument ``word`` (see :data:`_KILLER`); fails the test if it
    was not killed."""
    killer = project / "killer.py"
    killer.write_text(_KILLER)
    proc = subprocess.run([sys.executable, str(killer), word, str(project),
                           "after" if after else "before"], cwd=project,
                          env=tectum_env(), capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL, check=False)
    killer.unlink()
    assert proc.returncode == -9, f"not killed at {word!r}:\n{proc.stdout}\n{proc.stderr}"


# -- clone, no-op, a branch that moves --------------------------------------------------------

def test_clones_a_branch_and_a_noop_only_reads(rt: GitCheckoutType, conn: LocalConnector,
                                               src: Path, tmp_path: Path) -> None:
    dest = str(tmp_path / "deploy" / "app")  # its parent is made too
    want = git(src, "rev-parse", "main")
    change, record = converge(rt, conn, {"repo": str(src), "dest": dest, "version": "main"})
    assert change.action is Action.CREATE
    assert shown(change)["commit"] == (None, want)
    assert shown(change)["ref"] == (None, "refs/heads/main")
    assert record["commit"] == want == head(dest)
    assert git(dest, "symbolic-ref", "HEAD") == "refs/heads/main"
    assert git(dest, "rev-parse", "--abbrev-ref", "main@{upstream}") == "origin/main"
    assert git(dest, "config", "remote.origin.url") == str(src)

    mark = len(conn.log)
    again = plan(rt, conn, {"repo": str(src), "dest": dest, "version": "main"}, record)
    assert again.action is Action.NOOP and again.changes == []
    assert mutations(conn, mark) == []
    runs = conn.log[mark:]
    assert len(runs) == 1, "every fact of the checkout and its remote in one command"
    assert "fetch" not in str(runs[0]["argv"]).replace("ls-remote", "")
    assert "ls-remote" in str(runs[0]["argv"])


def test_a_branch_that_moves_upstream_is_a_change(rt: GitCheckoutType, conn: LocalConnector,
                                                  src: Path, tmp_path: Path) -> None:
    dest = str(tmp_path / "app")
    attrs = {"repo": str(src), "dest": dest, "version": "main"}
    _, record = converge(rt, conn, attrs)
    old = record["commit"]
    new = commit(src, "two")
    change, record = converge(rt, conn, attrs, record)
    assert change.action is Action.UPDATE
    assert shown(change) == {"commit": (old, new)}  # the branch stays: no ref change
    assert head(dest) == new == record["commit"]
    assert git(dest, "symbolic-ref", "HEAD") == "refs/heads/main"
    assert plan(rt, conn, attrs, record).action is Action.NOOP


def test_the_planned_commit_is_checked_out_even_if_the_branch_moved_again(
        rt: GitCheckoutType, conn: LocalConnector, src: Path, tmp_path: Path) -> None:
    dest = str(tmp_path / "app")
    attrs = {"repo": str(src), "dest": dest, "version": "main"}
    _, record = converge(rt, conn, attrs)
    planned = commit(src, "two")
    change = plan(rt, conn, attrs, record)
    later = commit(src, "three")  # after the plan, before the apply
    record = rt.apply(conn, change) or {}
    assert head(dest) == planned == record["commit"] != later
    assert shown(plan(rt, conn, attrs, record))["commit"] == (planned, later)


# -- versions: tag (light and annotated), commit, remote HEAD; file:// URLs ------------------

def test_tags_and_commits_are_checked_out_detached(rt: GitCheckoutType, conn: LocalConnector,
                                                   src: Path, tmp_path: Path) -> None:
    dest = str(tmp_path / "app")
    url = f"file://{src}"
    v1 = git(src, "rev-parse", "v1")
    two = commit(src, "two")
    git(src, "tag", "-a", "-m", "release 2", "v2")  # annotated: peeled to its commit
    three = commit(src, "three")

    change, record = converge(rt, conn, {"repo": url, "dest": dest, "version": "v2"})
    assert shown(change)["ref"] == (None, "refs/tags/v2")
    assert head(dest) == two == record["commit"]
    assert subprocess.run(["git", "-C", dest, "symbolic-ref", "-q", "HEAD"],
                          check=False).returncode == 1  # detached

    change, record = converge(rt, conn, {"repo": url, "dest": dest, "version": "v1"}, record)
    assert shown(change)["commit"] == (two, v1) and head(dest) == v1

    change, record = converge(rt, conn, {"repo": url, "dest": dest, "version": three}, record)
    assert shown(change)["commit"] == (v1, three) and head(dest) == three
    assert plan(rt, conn, {"repo": url, "dest": dest, "version": three},
                record).action is Action.NOOP

    # unset: the remote's HEAD, i.e. its current branch, checked out as that branch
    change, record = converge(rt, conn, {"repo": url, "dest": dest}, record)
    assert shown(change)["ref"] == (None, "refs/heads/main")
    assert git(dest, "symbolic-ref", "HEAD") == "refs/heads/main" and head(dest) == three


def test_other_branches_and_a_shallow_clone(rt: GitCheckoutType, conn: LocalConnector,
                                            src: Path, tmp_path: Path) -> None:
    git(src, "checkout", "-q", "-b", "release/2")
    tip = commit(src, "on the release branch")
    git(src, "checkout", "-q", "main")
    commit(src, "on main")
    dest = str(tmp_path / "shallow")
    attrs = {"repo": f"file://{src}", "dest": dest, "version": "release/2", "depth": 1}
    _, record = converge(rt, conn, attrs)
    assert head(dest) == tip and git(dest, "rev-parse", "--is-shallow-repository") == "true"
    assert git(dest, "rev-list", "--count", "HEAD") == "1"
    assert git(dest, "symbolic-ref", "HEAD") == "refs/heads/release/2"
    assert plan(rt, conn, attrs, record).action is Action.NOOP


# -- hand-made changes ---------------------------------------------------------------------------

def test_a_checkout_moved_by_hand_is_put_back(rt: GitCheckoutType, conn: LocalConnector,
                                             src: Path, tmp_path: Path) -> None:
    dest = str(tmp_path / "app")
    one = git(src, "rev-parse", "HEAD")
    two = commit(src, "two")
    attrs = {"repo": str(src), "dest": dest, "version": "main"}
    _, record = converge(rt, conn, attrs)
    git(dest, "checkout", "-q", "--detach", one)
    change = plan(rt, conn, attrs, record)
    assert change.action is Action.UPDATE
    assert shown(change) == {"ref": (None, "refs/heads/main"), "commit": (one, two)}
    assert change.before is not None and change.before["commit"] == one  # as read, not state
    mark = len(conn.log)
    record = rt.apply(conn, change) or {}
    assert not any("'fetch'" in str(e.get("argv")) for e in conn.log[mark:]), \
        "the commit was there: nothing fetched"
    assert head(dest) == two and git(dest, "symbolic-ref", "HEAD") == "refs/heads/main"


def test_a_read_writes_nothing_in_the_checkout(rt: GitCheckoutType, conn: LocalConnector,
                                               src: Path, tmp_path: Path) -> None:
    dest = tmp_path / "app"
    attrs = {"repo": str(src), "dest": str(dest)}
    _, record = converge(rt, conn, attrs)
    index = dest / ".git" / "index"
    before = index.stat().st_mtime_ns
    os.utime(dest / "app.txt", ns=(1, 1))  # stale stat data: a plain git status rewrites it
    assert plan(rt, conn, attrs, record).action is Action.NOOP
    assert index.stat().st_mtime_ns == before
    (dest / ".git" / "index.lock").write_text("")  # a git command at work in the checkout
    assert plan(rt, conn, attrs, record).action is Action.NOOP
    (dest / ".git" / "index.lock").unlink()


def test_local_modifications_are_refused_at_plan_time(rt: GitCheckoutType,
                                                      conn: LocalConnector, src: Path,
                                                      tmp_path: Path) -> None:
    dest = str(tmp_path / "app")
    attrs = {"repo": str(src), "dest": dest}
    _, record = converge(rt, conn, attrs)
    # an untracked file is no local modification (Ansible's has_local_mods ignores them)
    (tmp_path / "app" / "build.log").write_text("x\n")
    assert plan(rt, conn, attrs, record).action is Action.NOOP
    (tmp_path / "app" / "app.txt").write_text("edited on the server\n")
    commit(src, "two")
    with pytest.raises(DiagnosticError) as info:
        plan(rt, conn, attrs, record)
    diag = next(iter(info.value.diagnostics))
    assert dest in diag.summary
    assert "app.txt" in diag.detail and "force=True" in diag.detail
    assert (tmp_path / "app" / "app.txt").read_text() == "edited on the server\n"

    # force=True: discarded (git reset --hard), then moved to the new commit
    forced = {**attrs, "force": True}
    change, record = converge(rt, conn, forced, record)
    assert shown(change)["local_changes"] == ("1 modified file", "discarded")
    assert rt.warnings(change) and "discarded" in rt.warnings(change)[0]
    assert (tmp_path / "app" / "app.txt").read_text() == "one\ntwo\n"
    assert (tmp_path / "app" / "build.log").exists(), "untracked files are left alone"
    assert plan(rt, conn, forced, record).action is Action.NOOP


def test_a_changed_origin_url_is_set_back(rt: GitCheckoutType, conn: LocalConnector,
                                          src: Path, tmp_path: Path) -> None:
    dest = str(tmp_path / "app")
    attrs = {"repo": str(src), "dest": dest}
    _, record = converge(rt, conn, attrs)
    git(dest, "remote", "set-url", "origin", f"file://{src}")
    change, record = converge(rt, conn, attrs, record)
    assert change.action is Action.UPDATE
    assert shown(change) == {"repo": (f"file://{src}", str(src))}
    assert git(dest, "config", "remote.origin.url") == str(src)


def test_owner_and_group_give_the_working_tree_away(rt: GitCheckoutType,
                                                    conn: LocalConnector, src: Path,
                                                    tmp_path: Path) -> None:
    nobody, nogroup = pwd.getpwnam("nobody"), grp.getgrnam("nogroup")
    dest = tmp_path / "app"
    attrs = {"repo": str(src), "dest": str(dest), "owner": "nobody", "group": "nogroup"}

    def owners() -> set[tuple[int, int]]:
        return {(p.lstat().st_uid, p.lstat().st_gid) for p in [dest, *dest.rglob("*")]}

    change, record = converge(rt, conn, attrs)
    assert shown(change)["owner"] == (None, "nobody")
    assert owners() == {(nobody.pw_uid, nogroup.gr_gid)}
    assert (record["owner"], record["group"]) == ("nobody", "nogroup")
    assert plan(rt, conn, attrs, record).action is Action.NOOP

    new = commit(src, "two")  # what the fetch writes is given away too
    change, record = converge(rt, conn, attrs, record)
    assert head(dest) == new and owners() == {(nobody.pw_uid, nogroup.gr_gid)}

    os.chown(dest, 0, nogroup.gr_gid)  # by hand
    change = plan(rt, conn, attrs, record)
    assert shown(change) == {"owner": ("root", "nobody")}
    rt.apply(conn, change)
    assert owners() == {(nobody.pw_uid, nogroup.gr_gid)}
    # numeric ids compare as ids
    by_id = {**attrs, "owner": str(nobody.pw_uid), "group": str(nogroup.gr_gid)}
    assert plan(rt, conn, by_id, record).action is Action.NOOP
    assert rt.schema.attrs["owner"].check("a:b") is not None


# -- what is in the way, and what cannot be planned -------------------------------------------

def test_problems_are_plan_time_diagnostics(rt: GitCheckoutType, conn: LocalConnector,
                                            src: Path, tmp_path: Path) -> None:
    cases = {
        "has no branch or tag 'nope'": {"repo": str(src), "version": "nope"},
        "a commit is written as its full 40-hex id": {"repo": str(src), "version": "abc1234"},
        "ls-remote": {"repo": str(tmp_path / "no-such-repo")},
    }
    for expected, attrs in cases.items():
        with pytest.raises(DiagnosticError) as info:
            plan(rt, conn, {**attrs, "dest": str(tmp_path / "app")})
        diag = next(iter(info.value.diagnostics))
        assert expected in diag.detail, diag
    (tmp_path / "file").write_text("x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "data").write_text("x")
    for dest, expected in ((tmp_path / "file", "not a directory"),
                           (tmp_path / "full", "not the top of a git checkout")):
        with pytest.raises(DiagnosticError) as info:
            plan(rt, conn, {"repo": str(src), "dest": str(dest)})
        assert expected in next(iter(info.value.diagnostics)).detail
    assert not (tmp_path / "app").exists()


def test_bad_attributes_are_refused_by_the_schema(rt: GitCheckoutType) -> None:
    attrs = rt.schema.attrs
    assert attrs["dest"].check("relative/path") is not None
    assert "normal form" in (attrs["dest"].check("/srv/app/") or "")
    assert attrs["repo"].check("ext::sh -c touch% /tmp/x") is not None
    assert attrs["repo"].check("-uhack") is not None
    for good in ("https://example.org/a.git", "git@example.org:a/b.git", "/srv/repo.git",
                 "file:///srv/repo.git", "ssh://git@example.org:2222/a.git"):
        assert attrs["repo"].check(good) is None, good
    assert attrs["version"].check("--upload-pack=x") is not None
    assert attrs["version"].check("main..evil") is not None
    assert attrs["version"].check("release/2.1") is None
    assert attrs["depth"].check(0) is not None


def test_a_clone_into_an_empty_directory_keeps_it_on_delete(
        rt: GitCheckoutType, conn: LocalConnector, src: Path, tmp_path: Path) -> None:
    dest = tmp_path / "www"
    dest.mkdir()
    change, record = converge(rt, conn, {"repo": str(src), "dest": str(dest)})
    assert change.action is Action.CREATE and record["dest_existed"] is True
    assert rt.takes_over_as_created(change.before, change.after or {})
    assert "empties" in (rt.delete_summary(record) or "")
    assert rt.apply(conn, ResourceChange("git_checkout.app", "git_checkout", Action.DELETE,
                                         None, None, prior=record)) is None
    assert dest.is_dir() and list(dest.iterdir()) == []


def test_without_git_the_commit_is_known_after_apply_and_apply_says_what_to_do(
        rt: GitCheckoutType, src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"  # a PATH with the shell tools the read uses, and no git
    bin_dir.mkdir()
    for tool in ("sh", "ls", "tr", "grep", "head", "find"):
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).symlink_to(found)
    monkeypatch.setenv("PATH", str(bin_dir))
    conn = LocalConnector(log_path="")
    dest = str(tmp_path / "app")
    change = plan(rt, conn, {"repo": str(src), "dest": dest})
    assert change.action is Action.CREATE
    assert shown(change)["commit"] == (None, UNKNOWN_COMMIT)
    with pytest.raises(ApplyError, match="git is not installed"):
        rt.apply(conn, change)
    assert not os.path.exists(dest)


def test_one_command_reads_many_checkouts(rt: GitCheckoutType, conn: LocalConnector,
                                          src: Path, tmp_path: Path) -> None:
    other = make_repo(tmp_path / "other")
    objects = [rt.prepare({"repo": str(repo), "dest": str(tmp_path / name), "version": v},
                          "/")
               for repo, name, v in ((src, "a", "main"), (src, "b", "v1"), (other, "c", None))]
    found = rt.read_objects(conn, objects)
    assert len(conn.log) == 1 and str(conn.log[0]["argv"]).count(str(src)) == 1, \
        "one command; one ls-remote per repository"
    assert [f is not None and f["_want"] for f in found] == [
        git(src, "rev-parse", "main"), git(src, "rev-parse", "v1"),
        git(other, "rev-parse", "HEAD")]


# -- through the engine: created is removed, found is forgotten --------------------------------

def _stack(root: Path, src: Path, dest: Path) -> None:
    root.mkdir(exist_ok=True)
    (root / "stack.py").write_text(
        "from tectum.host import GitCheckout\n"
        f"GitCheckout('app', repo={str(src)!r}, dest={str(dest)!r}, version='main')\n")


def test_engine_destroy_removes_a_created_checkout_and_forgets_a_found_one(
        src: Path, tmp_path: Path) -> None:
    made, found = tmp_path / "made", tmp_path / "found"
    _stack(tmp_path / "p1", src, made)
    result = run_tectum("apply", "--auto-approve", str(tmp_path / "p1"))
    assert result.returncode == 0, result.output
    assert head(made) == git(src, "rev-parse", "main")
    result = run_tectum("plan", "--detailed-exitcode", str(tmp_path / "p1"))
    assert result.returncode == 0, result.output
    commit(src, "two")
    result = run_tectum("plan", str(tmp_path / "p1"))
    assert result.returncode == 0 and "commit" in result.output, result.output
    result = run_tectum("destroy", "--auto-approve", str(tmp_path / "p1"))
    assert result.returncode == 0, result.output
    assert not made.exists()

    subprocess.run(["git", "clone", "-q", str(src), str(found)], check=True)
    _stack(tmp_path / "p2", src, found)
    result = run_tectum("apply", "--auto-approve", str(tmp_path / "p2"))
    assert result.returncode == 0, result.output
    result = run_tectum("destroy", "--auto-approve", str(tmp_path / "p2"))
    assert result.returncode == 0, result.output
    assert head(found) == git(src, "rev-parse", "main"), "a found checkout stays"


def test_engine_reports_local_modifications_as_a_diagnostic(src: Path, tmp_path: Path) -> None:
    dest = tmp_path / "app"
    _stack(tmp_path / "p", src, dest)
    assert run_tectum("apply", "--auto-approve", str(tmp_path / "p")).returncode == 0
    (dest / "app.txt").write_text("hot fix\n")
    result = run_tectum("plan", str(tmp_path / "p"))
    assert result.returncode == 1
    assert "local modifications" in result.output and "Traceback" not in result.output
    assert run_tectum("destroy", "--auto-approve", str(tmp_path / "p")).returncode == 0


# -- over SSH: the read is part of the host's one facts round trip ----------------------------

@pytest.fixture(scope="module")
def fleet() -> Any:
    from tests.harness.fleet import Fleet

    if os.geteuid() != 0:
        pytest.skip("the fleet harness needs root")
    with Fleet(names=["git1"], apt=True) as fleet:
        yield fleet


@pytest.mark.fleet
@pytest.mark.apt
def test_over_ssh_git_missing_then_installed(fleet: Any, rt: GitCheckoutType) -> None:
    from tectum.providers.host.provider import HostProvider
    from tectum.providers.host.ssh import SSHConnector

    host = fleet.host("git1")
    conn = SSHConnector(host.name, host.address, port=host.port, key_path=host.key_path,
                        known_hosts=host.known_hosts, log_path="")
    provider = HostProvider()
    src, dest = "/srv/tectum-git-src", "/srv/tectum-git-app"
    attrs = rt.prepare({"repo": src, "dest": dest, "version": "main"}, "/")

    def ssh_plan(prior: dict[str, Any] | None = None) -> ResourceChange:
        item = ReadItem(attrs, prior)
        mark = len(conn.log)
        provider.begin_read(conn, [(rt, [item])])
        try:
            obs = rt.read(conn, [item])[0]
        finally:
            provider.end_read(conn)
        # one round trip: the facts script, whose answer the read's command is given
        assert [e["op"] for e in conn.log[mark:]] == ["facts", "run"]
        assert conn.log[mark]["commands"] == 1 and conn.log[mark + 1]["mutating"] is False
        action, changes = rt.plan(attrs, obs, prior)
        return ResourceChange("git_checkout.app", "git_checkout", action,
                              rt.stored(obs) if obs is not None else None, attrs, changes,
                              prior=prior)

    try:
        if fleet.run("git1", "command -v git").returncode != 0:
            change = ssh_plan()
            assert shown(change)["commit"] == (None, UNKNOWN_COMMIT)
            with pytest.raises(ApplyError, match="git is not installed on git1"):
                rt.apply(conn, change)
            fleet.run("git1", "DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
                      "--no-install-recommends git", check=True, timeout=600)
        fleet.run("git1", f"git init -q -b main {src} && cd {src} && git -c user.name=t -c "
                  "user.email=t@t commit -q --allow-empty -m one", check=True)
        want = fleet.run("git1", f"git -C {src} rev-parse main", check=True).stdout.strip()
        change = ssh_plan()
        assert shown(change)["commit"] == (None, want)
        record = rt.apply(conn, change)
        assert record is not None and record["commit"] == want
        assert fleet.run("git1", f"git -C {dest} rev-parse HEAD").stdout.strip() == want
        mark = len(conn.log)
        assert ssh_plan(record).action is Action.NOOP
        assert [e for e in conn.log[mark:] if e["mutating"]] == []
        assert rt.apply(conn, ResourceChange("git_checkout.app", "git_checkout",
                                             Action.DELETE, None, None,
                                             prior=record)) is None
        assert fleet.run("git1", f"test -e {dest}").returncode == 1
    finally:
        conn.close()
        fleet.run("git1", f"rm -rf {src} {dest}")


def test_drift_reports_a_checkout_moved_by_hand(src: Path, tmp_path: Path) -> None:
    """``commit`` is computed (the configuration names a version), yet another commit checked
    out by hand is drift (``ResourceType.drift_attrs``); a branch that moved upstream is a
    planned change, not drift."""
    dest = tmp_path / "made"
    first = git(src, "rev-parse", "main")
    commit(src, "two")
    _stack(tmp_path / "p", src, dest)
    assert run_tectum("apply", "--auto-approve", str(tmp_path / "p")).returncode == 0
    commit(src, "three")  # upstream moves: not drift
    result = run_tectum("drift", "--detailed-exitcode", str(tmp_path / "p"))
    assert result.returncode == 0, result.output
    subprocess.run(["git", "-C", str(dest), "checkout", "-q", "--detach", first], check=True)
    result = run_tectum("drift", "--detailed-exitcode", str(tmp_path / "p"))
    assert result.returncode == 2, result.output
    assert "git_checkout.app" in result.stdout and "commit" in result.stdout


# -- credentials, options, interrupted clones ----------------------------------------------

def test_credentials_and_options_in_repo_are_refused(rt: GitCheckoutType) -> None:
    check = rt.schema.attrs["repo"].check
    for bad in ("https://deploy:s3cr3t-token@example.org/a.git",
                "https://ghp_t0ken@example.org/a.git", "ssh://git:pw@example.org/a.git"):
        problem = check(bad) or ""
        assert "credential helper" in problem and "s3cr3t" not in problem, bad
    assert "option" in (check("-uecho@x:y") or "")
    assert check("ssh://git@example.org/a.git") is None  # (a user name for ssh is no secret)


def test_a_repo_with_credentials_is_refused_before_anything_runs(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "stack.py").write_text(
        "from tectum.host import GitCheckout\n"
        "GitCheckout('app', repo='https://deploy:s3cr3t-token@127.0.0.1:9/a.git', "
        f"dest={str(tmp_path / 'app')!r})\n")
    for command in ("validate", "plan"):
        result = run_tectum(command, str(root))
        assert result.returncode == 1 and "credential helper" in result.output, result.output
        assert "s3cr3t" not in result.output
    assert not (tmp_path / "app").exists()


def test_a_killed_clone_is_finished_by_the_next_apply(src: Path, tmp_path: Path) -> None:
    dest = tmp_path / "app"
    root = tmp_path / "proj"
    _stack(root, src, dest)
    apply_killed_at("fetch", root)  # (after git init and remote add)
    assert (dest / ".git").is_dir() and (dest / ".git" / "tectum-clone").exists()
    result = run_tectum("plan", str(root))
    assert result.returncode == 0 and "1 to add" in result.output, result.output
    result = run_tectum("apply", "--auto-approve", str(root))
    assert result.returncode == 0, result.output
    assert head(dest) == git(src, "rev-parse", "main")
    assert not (dest / ".git" / "tectum-clone").exists()
    assert run_tectum("plan", "--detailed-exitcode", str(root)).returncode == 0
    result = run_tectum("destroy", "--auto-approve", str(root))
    assert result.returncode == 0, result.output
    assert not dest.exists(), "the interrupted run made it: destroy removes it"


def test_an_unmarked_unborn_checkout_of_the_repo_is_taken_over(
        rt: GitCheckoutType, conn: LocalConnector, src: Path, tmp_path: Path) -> None:
    # what a clone killed between git init and its mark leaves (or an empty init by hand)
    dest = tmp_path / "app"
    subprocess.run(["git", "init", "-q", str(dest)], check=True)
    git(dest, "remote", "add", "origin", str(src))
    change, record = converge(rt, conn, {"repo": str(src), "dest": str(dest),
                                         "version": "main"})
    assert change.action is Action.CREATE and head(dest) == git(src, "rev-parse", "main")
    assert record["dest_existed"] is True  # (unknown: a delete empties it, never removes it)


def test_someones_unborn_repository_is_left_alone(
        rt: GitCheckoutType, conn: LocalConnector, src: Path, tmp_path: Path) -> None:
    dest = tmp_path / "work"
    subprocess.run(["git", "init", "-q", str(dest)], check=True)
    git(dest, "remote", "add", "origin", str(src))
    (dest / "notes.txt").write_text("not committed yet\n")
    change = plan(rt, conn, {"repo": str(src), "dest": str(dest)})
    assert change.action is Action.CREATE
    with pytest.raises(ApplyError, match="something is there now"):
        rt.apply(conn, change)
    rt.sweep_interrupted(conn, [rt.journal_identity({"dest": str(dest), "repo": str(src)})])
    assert (dest / "notes.txt").read_text() == "not committed yet\n"


def test_sweep_removes_a_killed_clone_whose_resource_went(src: Path, tmp_path: Path) -> None:
    dest, other = tmp_path / "app", tmp_path / "other"
    root = tmp_path / "proj"
    _stack(root, src, dest)
    apply_killed_at("fetch", root)
    assert (dest / ".git").is_dir()
    _stack(root, src, other)  # the checkout moves elsewhere before the next apply
    result = run_tectum("apply", "--auto-approve", str(root))
    assert result.returncode == 0, result.output
    assert not dest.exists(), "the sweep removes what the killed clone left"
    assert head(other) == git(src, "rev-parse", "main")
    assert run_tectum("destroy", "--auto-approve", str(root)).returncode == 0
    assert not other.exists()
