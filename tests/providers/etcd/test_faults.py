"""etcd killed in the middle of an apply (SIGKILL to the server, on a server of the test's own)
and started again: the apply fails clearly naming the endpoint, state keeps exactly what was
done, and the next apply converges; and ``kill -9`` of tectum itself at ≥ 30 points of an
apply, a change and a destroy: the next run finishes the work and a destroy leaves no key
behind (0 orphans)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tectum.providers.etcd.client import lease_ids
from tests.conftest import Result, ok, tectum_env
from tests.harness.etcd import EtcdSpace, running_etcd

STACK = '''
from tectum import var
from tectum.etcd import Key, KeyPrefix

P = "PREFIX"
v = var("v", str, default="one")
for i in range(N):
    Key(f"k{i}", key=f"{P}keys/k{i}", value=f"{v}-{i}")
KeyPrefix("cfg", prefix=P + "cfg/", values={"a": v, "b": v + "-b"})
Key("leased", key=P + "lease/me", value=v, lease_ttl=600)
'''

#: ``python KILLER METHOD WHEN NTH PID|- ARGS...``: tectum ARGS that, at its NTH call of
#: EtcdClient.METHOD (``any``: any changing call), SIGKILLs the process PID (``-``: itself)
#: before or after the call
_KILLER = """\
import os, signal, sys, threading
from tectum.providers.etcd import client
method, when, nth, pid = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
lock, seen = threading.Lock(), [0]
CHANGES = ("put", "put_leased", "commit", "delete_keys", "grant", "revoke")
def wrap(name):
    real = getattr(client.EtcdClient, name)
    def call(self, *a, **k):
        with lock:
            seen[0] += 1
            hit = seen[0] == nth
        if not hit:
            return real(self, *a, **k)
        victim = os.getpid() if pid == "-" else int(pid)
        if when == "after":
            out = real(self, *a, **k)
            os.kill(victim, signal.SIGKILL)
            return out
        os.kill(victim, signal.SIGKILL)
        return real(self, *a, **k)
    setattr(client.EtcdClient, name, call)
for name in (CHANGES if method == "any" else (method,)):
    wrap(name)
from tectum.cli.main import main
sys.argv = ["tectum", *sys.argv[5:]]
main()
"""


def run_killer(root: Path, method: str, when: str, nth: int, pid: str,
               *args: str) -> subprocess.CompletedProcess[str]:
    killer = root / "killer.py"
    killer.write_text(_KILLER)
    try:
        return subprocess.run([sys.executable, str(killer), method, when, str(nth), pid,
                               *args], cwd=root, env=tectum_env(), capture_output=True,
                              text=True, timeout=300, stdin=subprocess.DEVNULL, check=False)
    finally:
        killer.unlink()


def stack(prefix: str, n: int) -> str:
    return STACK.replace("PREFIX", prefix).replace("N", str(n))


def state_list(tectum: Callable[..., Result], root: Path) -> list[str]:
    return ok(tectum("state", "list", str(root))).stdout.split()


def test_etcd_killed_mid_apply_then_restarted(tectum: Callable[..., Result],
                                              make_project: Callable[..., Path],
                                              tmp_path: Path) -> None:
    with running_etcd(tmp_path) as server:
        root = make_project(stack("/own/", 12), {"tectum.toml": server.toml()
                                                 + "concurrency = 1\n"})
        proc = run_killer(root, "put", "after", 5, str(server.proc.pid if server.proc
                                                       else 0), "apply", "-auto-approve")
        out = proc.stdout + proc.stderr
        assert proc.returncode == 1, out
        assert f"etcd is unreachable at {server.endpoint}" in out, out
        assert "Traceback" not in out, out
        recorded = [a for a in state_list(tectum, root) if a.startswith("etcd_key.k")]
        assert len(recorded) == 5, recorded  # what was done, and nothing else
        server.start()
        written = server.keys("/own/")
        assert {f"etcd_key.k{k.rsplit('k', 1)[1]}" for k in written
                if k.startswith("/own/keys/")} == set(recorded)
        ok(tectum("apply", "-auto-approve", cwd=root))
        assert "No changes" in ok(tectum("plan", cwd=root)).output
        assert len(server.keys("/own/")) == 12 + 2 + 1
        ok(tectum("destroy", "-auto-approve", cwd=root))
        assert server.keys("/own/") == {}


# kill -9 points: (the run interrupted, the changing call, before/after, which one)
# (a first apply makes 10 changing calls: 8 puts, the prefix's commit, the leased key's
# grant-and-put; a change makes 11: the same and the revoke of the previous lease)
_FIRST = [("apply", "any", w, n) for n in range(1, 11) for w in ("before", "after")]
_CHANGE = [("change", "any", w, n) for n, w in ((1, "before"), (2, "after"), (3, "after"),
                                                (6, "before"), (8, "after"), (10, "after"),
                                                (11, "before"), (11, "after"))]
_DESTROY = [("destroy", "delete_keys", w, n) for n, w in ((1, "after"), (4, "before"),
                                                          (7, "after"), (10, "before"))]
POINTS = _FIRST + _CHANGE + _DESTROY  # 32


@pytest.mark.slow
@pytest.mark.parametrize("phase, method, when, nth", POINTS)
def test_kill_9_leaves_no_orphan(tectum: Callable[..., Result],
                                 make_project: Callable[..., Path], etcd: EtcdSpace,
                                 phase: str, method: str, when: str, nth: int) -> None:
    """8 keys, a prefix of 2 and a leased key (10 changing etcd calls in a first apply, 11
    in a change); afterwards no key and no lease of tectum's is left."""
    root = make_project(stack(etcd.prefix, 8), {"tectum.toml": etcd.server.toml()})
    more: list[str] = []
    if phase != "apply":
        ok(tectum("apply", "-auto-approve", cwd=root))
    if phase == "change":
        more = ["-var", "v=two"]
    command = ["destroy"] if phase == "destroy" else ["apply"]
    proc = run_killer(root, method, when, nth, "-", *command, "-auto-approve", *more)
    assert proc.returncode == -9, f"not killed:\n{proc.stdout}\n{proc.stderr}"
    if phase == "destroy":
        ok(tectum("destroy", "-auto-approve", cwd=root))
    else:
        again = ok(tectum("apply", "-auto-approve", *more, cwd=root))
        assert "Traceback" not in again.output
        assert "No changes" in ok(tectum("plan", *more, cwd=root)).output
        want = "two" if phase == "change" else "one"
        keys = etcd.keys()
        assert keys[etcd.prefix + "keys/k0"] == f"{want}-0" and len(keys) == 8 + 2 + 1
        ok(tectum("destroy", "-auto-approve", *more, cwd=root))
    assert etcd.keys() == {}, "keys left behind (orphans)"
    leased = etcd.prefix + "lease/me"
    assert not set(etcd.server.client().leases()) & set(lease_ids(leased)), \
        "a lease of tectum's left behind"
    assert state_list(tectum, root) == []
    pending = json.loads(ok(tectum("state", "pull", str(root))).stdout or "{}")
    assert not pending.get("resources"), pending
