"""``tectum agent`` end to end: the real CLI following a real git repository (a bare repository
over ``file://``), managing real files; its reports read back with ``tectum runs``."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Result, run_tectum, tectum_env

STACK = """\
from tectum.host import File
File("a", path="{world}/a.txt", content="{text}\\n")
"""


class Repo:
    """A bare repository (the remote the agent follows) and a work tree that commits to it."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.world = tmp / "world"
        self.world.mkdir()
        self.src = tmp / "src"
        self.bare = tmp / "repo.git"
        self.workdir = tmp / "agent"
        self.git("init", "-q", "-b", "main", str(self.src), cwd=tmp)
        self.commit("one")
        self.git("clone", "-q", "--bare", str(self.src), str(self.bare), cwd=tmp)
        self.git("remote", "add", "origin", str(self.bare))

    def git(self, *args: str, cwd: Path | None = None) -> str:
        env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
               "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}
        proc = subprocess.run(["git", *args], cwd=cwd or self.src, env=env, text=True,
                              capture_output=True, check=True)
        return proc.stdout.strip()

    def commit(self, text: str, stack: str | None = None, push: bool = False) -> str:
        (self.src / "stack.py").write_text(
            stack if stack is not None else STACK.format(world=self.world, text=text))
        self.git("add", "-A")
        self.git("commit", "-q", "-m", text)
        if push:
            self.git("push", "-q", "--force", "origin", "HEAD:main")
        return self.git("rev-parse", "HEAD")

    @property
    def url(self) -> str:
        return f"file://{self.bare}"

    def agent(self, *args: str) -> Result:
        return run_tectum("agent", "--repo", self.url, "--workdir", str(self.workdir),
                          "--interval", "1s", "--name", "host-a", *args, timeout=120)

    def runs(self) -> list[dict[str, Any]]:
        out = run_tectum("runs", "list", "--json", str(self.workdir / "repo"))
        assert out.returncode == 0, out.output
        runs: list[dict[str, Any]] = json.loads(out.stdout)["runs"]
        return runs

    def text(self) -> str:
        return (self.world / "a.txt").read_text()


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo(tmp_path)


def last_status(result: Result) -> str:
    """The status of the last "run ID STATUS: ..." line an agent printed."""
    found = re.findall(r" run [0-9a-f]{12} ([a-z-]+):", result.stdout)
    assert found, result.output
    return str(found[-1])


def test_each_mode_does_what_it_says(repo: Repo) -> None:
    first = repo.agent("--mode", "apply", "--once")
    assert first.returncode == 0 and last_status(first) == "changed", first.output
    assert repo.text() == "one\n"

    # a change by hand: report mode only reports it
    (repo.world / "a.txt").write_text("by hand\n")
    reported = repo.agent("--mode", "report", "--once")
    assert last_status(reported) == "drift-found", reported.output
    assert repo.text() == "by hand\n"

    # remediate puts it back
    fixed = repo.agent("--mode", "remediate", "--once")
    assert last_status(fixed) == "drift-corrected", fixed.output
    assert repo.text() == "one\n"

    # a new commit: remediate does not apply it, but still puts back drift
    two = repo.commit("two", push=True)
    (repo.world / "a.txt").write_text("by hand again\n")
    waiting = repo.agent("--mode", "remediate", "--once")
    assert last_status(waiting) == "drift-corrected", waiting.output
    assert "waits: mode remediate applies no new commit" in waiting.stdout
    assert repo.text() == "one\n"
    # and with no drift, the commit is reported as waiting
    assert last_status(repo.agent("--mode", "remediate", "--once")) == "pending"
    assert repo.text() == "one\n"

    applied = repo.agent("--mode", "apply", "--once")
    assert last_status(applied) == "changed", applied.output
    assert repo.text() == "two\n"

    runs = repo.runs()
    assert [r["status"] for r in runs] == ["changed", "pending", "drift-corrected",
                                           "drift-corrected", "drift-found", "changed"]
    assert runs[0]["commit"] == two and runs[0]["host"] == "host-a"
    assert runs[3]["corrective"] == 1 and runs[3]["drift"] == ["file.a"]
    shown = run_tectum("runs", "show", runs[3]["id"][:8], str(repo.workdir / "repo"))
    assert "status:     drift-corrected" in shown.stdout and "file.a" in shown.stdout


def test_a_commit_that_does_not_evaluate_fails_and_drift_is_still_put_back(
        repo: Repo) -> None:
    assert last_status(repo.agent("--mode", "apply", "--once")) == "changed"
    repo.commit("broken", stack="from tectum.host import File\nFile('a', path=)\n", push=True)
    (repo.world / "a.txt").write_text("by hand\n")
    broken = repo.agent("--mode", "apply", "--once")
    assert broken.returncode == 1, broken.output
    assert last_status(broken) == "failed"
    assert "error: commit" in broken.stdout and "Traceback" not in broken.output
    assert repo.text() == "one\n"  # the last good configuration still holds
    run = repo.runs()[0]
    assert run["status"] == "failed" and run["corrective"] == 1 and run["errors"]


def test_a_force_pushed_branch_is_followed(repo: Repo) -> None:
    one = repo.git("rev-parse", "HEAD")
    repo.commit("two", push=True)
    assert last_status(repo.agent("--mode", "apply", "--once")) == "changed"
    assert repo.text() == "two\n"
    repo.git("reset", "-q", "--hard", one)
    repo.git("push", "-q", "--force", "origin", "HEAD:main")
    assert last_status(repo.agent("--mode", "apply", "--once")) == "changed"
    assert repo.text() == "one\n"


def test_a_failed_fetch_is_reported_and_drift_still_corrected(repo: Repo) -> None:
    assert last_status(repo.agent("--mode", "apply", "--once")) == "changed"
    repo.bare.rename(repo.tmp / "moved.git")
    (repo.world / "a.txt").write_text("by hand\n")
    result = repo.agent("--mode", "remediate", "--once")
    assert last_status(result) == "failed", result.output
    assert "fetch of main" in result.stdout
    assert repo.text() == "one\n"


def test_the_loop_corrects_drift_within_an_interval_and_sigterm_stops_it(repo: Repo) -> None:
    assert last_status(repo.agent("--mode", "apply", "--once")) == "changed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tectum", "agent", "--repo", repo.url, "--workdir",
         str(repo.workdir), "--interval", "1s", "--splay", "1s", "--mode", "remediate"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=tectum_env())
    try:
        time.sleep(1.0)
        (repo.world / "a.txt").write_text("by hand\n")
        changed_at = time.monotonic()
        deadline = changed_at + 30
        while repo.text() != "one\n" and time.monotonic() < deadline:
            time.sleep(0.1)
        took = time.monotonic() - changed_at
        assert repo.text() == "one\n"
        # within interval + splay, plus a cycle's own time on a loaded machine
        assert took < 1 + 1 + 5, took
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert "SIGTERM received" in out and "stopped: state is saved" in out
    assert "drift-corrected" in out


def approve(repo: Repo, run_id: str) -> Result:
    return run_tectum("approve", run_id, "--project", str(repo.workdir / "repo"))


def test_a_new_commit_waits_for_approval_and_exactly_that_plan_is_applied(
        repo: Repo, tmp_path: Path) -> None:
    keygen = run_tectum("secrets", "keygen", "-o", str(tmp_path / "agent.key"))
    assert keygen.returncode == 0, keygen.output
    public = next(w for w in keygen.output.split() if w.startswith("age1"))
    env_key = {"TECTUM_AGE_KEY_FILE": str(tmp_path / "agent.key")}
    gated = ("--mode", "apply", "--require-approval", "--encrypt-to", public, "--once")

    def agent() -> Result:
        return run_tectum("agent", "--repo", repo.url, "--workdir", str(repo.workdir),
                          "--interval", "1s", "--name", "host-a", *gated, env=env_key,
                          timeout=120)

    first = agent()
    assert last_status(first) == "pending", first.output
    assert not (repo.world / "a.txt").exists()  # nothing applied before approval
    pending = repo.runs()[0]
    plan_file = Path(pending["plan_path"])
    assert plan_file.read_bytes().startswith(b"age-encryption.org/v1")
    assert pending["plan_digest"] and pending["pending"] == 1
    # the same commit, state unchanged: the same plan still waits (no new plan per cycle)
    again = agent()
    assert last_status(again) == "pending"
    assert repo.runs()[0]["plan_path"] == str(plan_file)

    ok = approve(repo, pending["id"][:10])
    assert ok.returncode == 0 and "Approved run" in ok.stdout, ok.output
    assert approve(repo, pending["id"]).returncode == 1  # (approved already: not pending)
    applied = agent()
    assert last_status(applied) == "changed", applied.output
    assert repo.text() == "one\n"
    runs = repo.runs()
    assert runs[0]["status"] == "changed"
    approved = next(r for r in runs if r["id"] == pending["id"])
    assert approved["status"] == "approved" and approved["applied_in"] == runs[0]["id"]
    assert approved["approved_by"]

    # a new commit waits; drift meanwhile is put back and the plan made again
    repo.commit("two", push=True)
    waiting = agent()
    assert last_status(waiting) == "pending" and repo.text() == "one\n"
    old = repo.runs()[0]
    (repo.world / "a.txt").write_text("by hand\n")
    fixed = agent()
    assert last_status(fixed) == "pending" and repo.text() == "one\n", fixed.output
    newer = repo.runs()[0]
    assert newer["corrective"] == 1 and newer["plan_digest"] != old["plan_digest"]
    refused = approve(repo, old["id"])
    assert refused.returncode == 1 and "Plan superseded" in refused.output

    # a plan file changed after approval is not applied
    assert approve(repo, newer["id"]).returncode == 0
    Path(newer["plan_path"]).write_bytes(Path(newer["plan_path"]).read_bytes() + b"\n")
    tampered = agent()
    assert last_status(tampered) == "failed" and "Approved plan changed" in tampered.stdout
    assert repo.text() == "one\n"
    # the next cycle plans again; approved, it applies
    retry = agent()
    assert last_status(retry) == "pending", retry.output
    assert approve(repo, repo.runs()[0]["id"]).returncode == 0
    assert last_status(agent()) == "changed"
    assert repo.text() == "two\n"


def test_an_unsigned_or_untrusted_commit_is_refused(repo: Repo, tmp_path: Path) -> None:
    keys = {}
    for who in ("trusted", "stranger"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", who, "-f",
                        str(tmp_path / who)], check=True)
        keys[who] = (tmp_path / f"{who}.pub").read_text().strip()
    signers = tmp_path / "allowed_signers"
    signers.write_text(f"t@example.org {keys['trusted']}\n")

    def signed(text: str, who: str) -> str:
        (repo.src / "stack.py").write_text(STACK.format(world=repo.world, text=text))
        repo.git("add", "-A")
        repo.git("-c", "gpg.format=ssh", "-c", f"user.signingkey={tmp_path / who}",
                 "commit", "-q", "--allow-empty", "-S", "-m", text)
        repo.git("push", "-q", "--force", "origin", "HEAD:main")
        return repo.git("rev-parse", "HEAD")

    strict = ("--mode", "apply", "--require-signed-commits", "--allowed-signers",
              str(signers), "--once")
    signed("one", "trusted")
    assert last_status(repo.agent(*strict)) == "changed"
    assert repo.text() == "one\n"
    repo.commit("unsigned", push=True)
    (repo.world / "a.txt").write_text("by hand\n")
    refused = repo.agent(*strict)
    assert last_status(refused) == "refused", refused.output
    assert "is refused" in refused.stdout
    assert repo.text() == "one\n"  # not applied; drift against the last accepted put back
    signed("stranger", "stranger")
    assert last_status(repo.agent(*strict)) == "refused"
    assert repo.text() == "one\n"
    signed("three", "trusted")
    assert last_status(repo.agent(*strict)) == "changed"
    assert repo.text() == "three\n"


def test_drift_and_failure_are_posted_to_webhooks_signed(repo: Repo, tmp_path: Path) -> None:
    import http.server
    import threading

    from tectum.webhooks import verify

    got: list[tuple[dict[str, str], bytes]] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append((dict(self.headers), body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    secret = "s3cret-for-the-webhook-test-0123456789"
    hooks = tmp_path / "hooks.toml"
    hooks.write_text(f'[[webhooks]]\nurl = "http://127.0.0.1:{server.server_address[1]}/h"\n'
                     'secret_env = "HOOK_SECRET"\n')
    try:
        assert last_status(repo.agent("--mode", "apply", "--once")) == "changed"
        (repo.world / "a.txt").write_text("by hand\n")
        fixed = run_tectum("agent", "--repo", repo.url, "--workdir", str(repo.workdir),
                           "--interval", "1s", "--mode", "remediate", "--once",
                           "--webhooks", str(hooks), env={"HOOK_SECRET": secret}, timeout=120)
        assert last_status(fixed) == "drift-corrected", fixed.output
    finally:
        server.shutdown()
    assert len(got) == 1, got
    headers, body = got[0]
    assert headers["X-Tectum-Event"] == "drift"
    assert verify(secret, body, int(headers["X-Tectum-Timestamp"]),
                  headers["X-Tectum-Signature"])
    event = json.loads(body)
    assert event["run"]["status"] == "drift-corrected" and event["run"]["drift"] == ["file.a"]
    assert secret not in fixed.output


# -- regressions of the review of the agent ------------------------------------------------------

MARKER_STACK = """\
from tectum.host import File
open("{marker}", "w").write("evaluated")
File("a", path="{world}/a.txt", content="evil\\n")
"""


def test_an_unsigned_head_is_never_evaluated_in_any_mode(repo: Repo, tmp_path: Path) -> None:
    marker = tmp_path / "evaluated"
    signers = tmp_path / "allowed_signers"
    signers.write_text("")
    repo.commit("unsigned", stack=MARKER_STACK.format(marker=marker, world=repo.world),
                push=True)
    for mode in ("report", "remediate", "apply"):
        result = repo.agent("--mode", mode, "--once", "--require-signed-commits",
                            "--allowed-signers", str(signers))
        assert result.returncode == 1 and last_status(result) == "refused", result.output
        assert not marker.exists(), mode
    assert not (repo.world / "a.txt").exists()


def test_an_approved_commit_withdrawn_from_the_branch_is_not_applied(repo: Repo) -> None:
    gated = ("--mode", "apply", "--require-approval", "--once")
    assert last_status(repo.agent(*gated)) == "pending"
    assert approve(repo, repo.runs()[0]["id"]).returncode == 0
    assert last_status(repo.agent(*gated)) == "changed"
    one = repo.git("rev-parse", "HEAD")
    repo.commit("evil", push=True)
    assert last_status(repo.agent(*gated)) == "pending"
    evil_run = repo.runs()[0]["id"]
    repo.git("reset", "-q", "--hard", one)
    repo.git("push", "-q", "--force", "origin", "HEAD:main")
    assert last_status(repo.agent(*gated)) == "unchanged"
    refused = approve(repo, evil_run)
    assert refused.returncode == 1, refused.output  # (a newer run of that agent exists)
    assert repo.text() == "one\n"


def test_remediate_puts_back_drift_only(repo: Repo, tmp_path: Path) -> None:
    assert last_status(repo.agent("--mode", "apply", "--once")) == "changed"
    # after a destroy nothing is deployed: remediate makes nothing again
    project = repo.workdir / "repo"
    destroyed = run_tectum("destroy", "--auto-approve", str(project))
    assert destroyed.returncode == 0, destroyed.output
    after = repo.agent("--mode", "remediate", "--once")
    assert last_status(after) == "pending", after.output
    assert not (repo.world / "a.txt").exists()


def test_a_commit_changing_only_tectum_toml_is_applied_in_its_own_cycle(repo: Repo) -> None:
    stack = ("from tectum import var\nfrom tectum.host import File\n"
             f"File('a', path='{repo.world}/a.txt', content=var('text', str) + '\\n')\n")
    (repo.src / "tectum.toml").write_text('[vars]\ntext = "one"\n')
    repo.commit("vars", stack=stack, push=True)
    assert last_status(repo.agent("--mode", "apply", "--once")) == "changed"
    (repo.src / "tectum.toml").write_text('[vars]\ntext = "two"\n')
    repo.git("commit", "-q", "-am", "two")
    repo.git("push", "-q", "origin", "HEAD:main")
    result = repo.agent("--mode", "apply", "--once")
    assert last_status(result) == "changed", result.output
    assert repo.text() == "two\n"


def test_a_broken_project_file_still_has_drift_put_back_and_reported(repo: Repo) -> None:
    assert last_status(repo.agent("--mode", "apply", "--once")) == "changed"
    (repo.src / "tectum.toml").write_text("[state\nbroken")
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", "broken toml")
    repo.git("push", "-q", "origin", "HEAD:main")
    for _ in range(2):
        (repo.world / "a.txt").write_text("by hand\n")
        result = repo.agent("--mode", "apply", "--once")
        assert last_status(result) == "failed", result.output
        assert "Invalid project file" in result.stdout and "kept in" not in result.stdout
        assert repo.text() == "one\n"
    assert [r["corrective"] for r in repo.runs()[:2]] == [1, 1]


def test_a_partly_failed_apply_counts_what_it_did(repo: Repo, tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a directory is wanted")
    repo.commit("partly", stack=(
        "from tectum.host import File\n"
        f"File('a', path='{repo.world}/a.txt', content='one\\n')\n"
        f"File('b', path='{blocker}/b.txt', content='x\\n')\n"), push=True)
    result = repo.agent("--mode", "apply", "--once")
    assert last_status(result) == "failed", result.output
    run = repo.runs()[0]
    assert run["changes"] == 1 and repo.text() == "one\n" and run["errors"]


def test_a_killed_agent_leaves_nothing_that_stops_the_next(repo: Repo) -> None:
    assert last_status(repo.agent("--mode", "apply", "--once")) == "changed"
    git_dir = repo.workdir / "repo" / ".git"
    (git_dir / "index.lock").write_text("")
    (git_dir / "refs" / "remotes" / "origin" / "main.lock").write_text("")
    repo.commit("two", push=True)
    result = repo.agent("--mode", "apply", "--once")
    assert last_status(result) == "changed", result.output
    assert repo.text() == "two\n"


def test_one_workdir_takes_one_agent(repo: Repo) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tectum", "agent", "--repo", repo.url, "--workdir",
         str(repo.workdir), "--interval", "1h", "--mode", "apply"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=tectum_env())
    try:
        deadline = time.monotonic() + 30
        while not (repo.world / "a.txt").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        second = repo.agent("--mode", "apply", "--once")
        assert second.returncode == 1 and "Agent workdir in use" in second.output
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)


def test_a_new_repository_url_is_followed_and_credentials_never_shown(
        repo: Repo, tmp_path: Path) -> None:
    assert last_status(repo.agent("--mode", "apply", "--once")) == "changed"
    other = tmp_path / "other.git"
    repo.git("clone", "-q", "--bare", str(repo.bare), str(other), cwd=tmp_path)
    repo.git("remote", "set-url", "origin", str(other))
    repo.commit("moved", push=True)
    moved = run_tectum("agent", "--repo", f"file://{other}", "--workdir", str(repo.workdir),
                       "--interval", "1s", "--name", "host-a", "--mode", "apply", "--once",
                       timeout=120)
    assert last_status(moved) == "changed", moved.output
    assert repo.text() == "moved\n"
    token = "ghp_" + "x7" * 18
    result = run_tectum("agent", "--repo", f"https://deploy:{token}@127.0.0.1:1/r.git",
                        "--workdir", str(repo.workdir), "--interval", "1s", "--mode",
                        "remediate", "--once", timeout=120)
    assert "fetch of main" in result.stdout and token not in result.output
    assert token not in json.dumps(repo.runs())


def test_unreachable_hosts_fail_the_run(repo: Repo) -> None:
    (repo.src / "inventory.toml").write_text(
        '[hosts.gone]\naddress = "127.0.0.1"\nport = 1\nuser = "root"\n')
    repo.commit("fleet", stack=(
        "from tectum import apply_role\nfrom tectum.host import File\n"
        "def role(host):\n"
        f"    File('a', path='/tmp/never-{os.getpid()}.txt', content='x')\n"
        "apply_role(role, 'all')\n"), push=True)
    result = repo.agent("--mode", "apply", "--once")
    assert last_status(result) == "failed", result.output
    assert "host gone" in result.stdout


def test_unreported_allows_for_the_splay() -> None:
    from tectum.runs import RunReport, unreported

    late = RunReport(workspace="default", host="h", mode="remediate", status="unchanged",
                     started_at=1000.0, duration=1.0, interval=2.0 + 5.0)
    assert unreported([late], now=1000.0 + 1.0 + 13.0) == []
    assert unreported([late], now=1000.0 + 1.0 + 15.0) == [late]


def test_sigterm_mid_apply_finishes_the_operation_under_way_and_saves_state(
        repo: Repo, tmp_path: Path) -> None:
    started, done = tmp_path / "started", tmp_path / "done"
    repo.commit("slow", stack=(
        "from tectum.host import Command, File\n"
        f"slow = Command('slow', command=['sh', '-c', 'touch {started}; sleep 2; "
        f"touch {done}'], creates='{done}')\n"
        f"File('b', path='{repo.world}/b.txt', content='after\\n', depends_on=[slow])\n"),
        push=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tectum", "agent", "--repo", repo.url, "--workdir",
         str(repo.workdir), "--interval", "1h", "--mode", "apply"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=tectum_env())
    try:
        deadline = time.monotonic() + 60
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started.exists()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert done.exists()  # the operation under way finished
    assert not (repo.world / "b.txt").exists()  # nothing new was started
    assert "interrupted by a signal" in out and "stopped: state is saved" in out
    listed = run_tectum("state", "list", str(repo.workdir / "repo"))
    assert "command.slow" in listed.stdout, listed.output
    # the next run finishes the rest
    assert last_status(repo.agent("--mode", "apply", "--once")) == "changed"
    assert (repo.world / "b.txt").read_text() == "after\n"


def test_with_approvers_only_a_signed_approval_is_applied(repo: Repo, tmp_path: Path) -> None:
    for who in ("ops", "stranger"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", who, "-f",
                        str(tmp_path / who)], check=True)
    approvers = tmp_path / "approvers"
    approvers.write_text(f"ops@example.org {(tmp_path / 'ops.pub').read_text().strip()}\n")
    gated = ("--mode", "apply", "--require-approval", "--approvers", str(approvers), "--once")
    project = str(repo.workdir / "repo")

    def pending_id() -> str:
        run = repo.runs()[0]
        assert run["status"] == "pending", run
        return str(run["id"])

    assert last_status(repo.agent(*gated)) == "pending"
    assert run_tectum("approve", pending_id(), "--project", project).returncode == 0
    unsigned = repo.agent(*gated)
    assert last_status(unsigned) == "failed" and "without a signature" in unsigned.stdout
    assert not (repo.world / "a.txt").exists()

    assert last_status(repo.agent(*gated)) == "pending"
    stranger = run_tectum("approve", pending_id(), "--project", project, "--sign-with",
                          str(tmp_path / "stranger"))
    assert stranger.returncode == 0, stranger.output
    assert last_status(repo.agent(*gated)) == "failed"
    assert not (repo.world / "a.txt").exists()

    assert last_status(repo.agent(*gated)) == "pending"
    signed = run_tectum("approve", pending_id(), "--project", project, "--sign-with",
                        str(tmp_path / "ops"))
    assert signed.returncode == 0, signed.output
    applied = repo.agent(*gated)
    assert last_status(applied) == "changed", applied.output
    assert "approved by ops@example.org" in applied.stdout
    assert repo.text() == "one\n"


def agent_trial_stack(world: Path, gen: int) -> str:
    lines = ["from tectum.host import Command, File"]
    lines += [f"File('f{i}', path='{world}/f{i}.txt', content='gen {gen} file {i}\\n')"
              for i in range(20)]
    lines.append(f"Command('c{gen}', command=['sh', '-c', 'sleep 0.3; echo {gen} > "
                 f"{world}/c.txt; touch {world}/c{gen}.done'], creates='{world}/c{gen}.done')")
    return "\n".join(lines) + "\n"


@pytest.mark.slow
def test_kill_9_of_the_agent_at_random_moments_30_trials(repo: Repo) -> None:
    """An agent killed (SIGKILL) at random moments of a cycle — fetching, checking out,
    planning, applying, storing its report: the next agent starts (no workdir lock or git
    lock file left in its way), converges, and state and the world agree."""
    import random

    rng = random.Random(1507)
    killed = 0
    for gen in range(30):
        repo.commit(f"gen {gen}", stack=agent_trial_stack(repo.world, gen), push=True)
        if gen % 3 == 1 and (repo.world / "f0.txt").exists():
            (repo.world / "f0.txt").write_text("by hand\n")
        proc = subprocess.Popen(
            [sys.executable, "-m", "tectum", "agent", "--repo", repo.url, "--workdir",
             str(repo.workdir), "--interval", "1s", "--mode", "apply", "--once"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=tectum_env())
        try:
            proc.wait(timeout=rng.uniform(0.05, 1.5))
        except subprocess.TimeoutExpired:
            proc.kill()
            killed += 1
        proc.wait()
        after = repo.agent("--mode", "apply", "--once")
        where = f"trial {gen}:\n{after.output}"
        assert after.returncode == 0, f"{where}:\n{after.output}"
        assert last_status(after) in ("changed", "unchanged", "drift-corrected"), after.output
        for i in range(20):
            assert (repo.world / f"f{i}.txt").read_text() == f"gen {gen} file {i}\n", where
        listed = run_tectum("state", "list", str(repo.workdir / "repo"))
        assert listed.returncode == 0, listed.output
        assert {f"file.f{i}" for i in range(20)} <= set(listed.stdout.split()), where
        assert "No changes" in run_tectum("plan", str(repo.workdir / "repo")).stdout, where
    assert killed >= 10, killed
