"""kill -9 during apply and destroy of every storage and identity type, on moto: the next run
finishes what the killed one was doing (adopting by name what it made), and no object is left
that state does not hold (0 unreported orphans).

Each trial is a chain on one project: ``tectum apply -parallelism 1`` (or ``destroy``) killed
with SIGKILL
right before, then right after, the first mutating AWS call it makes (any call but
``Describe*``, ``Get*``, ``List*``, ``Head*``), again and again — each killed run resumes where
the last one stopped, so every mutating call of the phase is a kill point, from both sides —
until a run gets through. After each killed run, every bucket, role, inline policy and table in
moto is either recorded in state or named by the journal of the interrupted run (so the next
plan reports it); at the end moto holds exactly what state holds, a plan is a no-op, and after
destroy moto holds nothing.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Result, ok, tectum_env
from tests.harness.moto import Moto
from tests.providers.aws.test_storage import NOTHING, TOML, World, expected, stack, state_names

pytestmark = [pytest.mark.aws, pytest.mark.slow]


@pytest.fixture
def cli(moto: Moto, tectum: Callable[..., Result]) -> Callable[..., Result]:
    def run(*args: str, **kwargs: Any) -> Result:
        return tectum(*args, env=moto.env(), **kwargs)
    return run


@pytest.fixture
def world(moto: Moto) -> World:
    return World(moto)


@pytest.fixture
def suffix() -> str:
    return secrets.token_hex(3)

#: ``python KILLER WHEN PROJECT ARGS...``: tectum ARGS that kills itself (SIGKILL) right
#: before / after its first mutating AWS call
_KILLER = """\
import os, signal, sys
import botocore.client
when, project = sys.argv[1], sys.argv[2]
READS = ("Describe", "Get", "List", "Head")
real = botocore.client.BaseClient._make_api_call
def call(self, operation, params):
    if operation.startswith(READS):
        return real(self, operation, params)
    if when == "after":
        real(self, operation, params)
    sys.stdout.write(f"KILLED {when} {operation}\\n")
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)
botocore.client.BaseClient._make_api_call = call
from tectum.cli.main import main
sys.argv = ["tectum", *sys.argv[3:], project]
main()
"""


def killed(moto: Moto, root: Path, when: str, *args: str) -> str | None:
    """Run ``tectum ARGS`` killing itself at its first mutating call (``when``: before or
    after it). Returns the operation it was killed at, or None when it had none to make (and
    so finished: it must have succeeded)."""
    killer = root.parent / "killer.py"
    killer.write_text(_KILLER)
    proc = subprocess.run([sys.executable, str(killer), when, str(root), *args], cwd=root,
                          env=tectum_env(moto.env()), capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL, check=False)
    if proc.returncode == -9:
        hit = [line for line in proc.stdout.splitlines() if line.startswith("KILLED ")]
        assert hit, proc.stdout
        return hit[-1].split()[-1]
    assert proc.returncode == 0, f"{args} {when}:\n{proc.stdout}\n{proc.stderr}"
    return None


def journal_names(root: Path) -> dict[str, list[str]]:
    """The objects the pending journal intents of the project's SQLite state name."""
    import sqlite3

    db = next(root.rglob("state.db"))
    out: dict[str, list[str]] = {"buckets": [], "roles": [], "tables": [], "policies": []}
    with sqlite3.connect(db) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = "
                                             "'table'")]
        rows: list[str] = []
        for table in tables:
            if "journal" in table:
                cols = [c[1] for c in conn.execute(f"PRAGMA table_info({table})")]
                for row in conn.execute(f"SELECT * FROM {table}"):
                    rows.extend(str(v) for v, c in zip(row, cols, strict=True)
                                if isinstance(v, str))
    text = "\n".join(rows)
    for key, field in (("buckets", "bucket"), ("roles", "name"), ("tables", "name")):
        out[key] = sorted(set(_values(text, field)))
    return out


def _values(text: str, field: str) -> list[str]:
    import re

    return re.findall(rf'"{field}":\s*"([^"]+)"', text)


def no_unreported_orphans(cli: Callable[..., Result], world: World, root: Path) -> None:
    """Every object in moto is in state, or named by the interrupted run's journal."""
    have = world.everything()
    try:
        known = state_names(cli, root)
    except (AssertionError, json.JSONDecodeError, StopIteration):
        known = {k: [] for k in NOTHING}  # (killed before any state was stored)
    try:
        pending = journal_names(root)
    except StopIteration:
        pending = {k: [] for k in NOTHING}
    for kind in ("buckets", "roles", "tables"):
        orphans = set(have[kind]) - set(known[kind]) - set(pending[kind])
        assert not orphans, f"unreported {kind}: {sorted(orphans)}"


def chain(cli: Callable[..., Result], moto: Moto, world: World, root: Path,
          *args: str) -> list[str]:
    """Kill ``tectum ARGS`` before, then after, its first mutating call, over and over, until
    a run finishes; returns the kill points (``before:CreateBucket``...)."""
    points: list[str] = []
    for _ in range(40):
        for when in ("before", "after"):
            hit = killed(moto, root, when, *args)
            if hit is None:
                return points
            points.append(f"{when}:{hit}")
            no_unreported_orphans(cli, world, root)
    raise AssertionError(f"tectum {args} never finished: {points}")


def test_kill_9_at_every_mutating_call_of_apply_update_and_destroy_leaves_no_orphan(
        cli: Callable[..., Result], moto: Moto, world: World,
        make_project: Callable[..., Path], suffix: str) -> None:
    root = make_project(stack(suffix), {"tectum.toml": TOML})
    one = ("-auto-approve", "-parallelism", "1")  # (one call at a time: each is a kill point)
    created = chain(cli, moto, world, root, "apply", *one)
    assert world.everything() == expected(suffix) == state_names(cli, root)
    # what the killed runs made counts as made by tectum (destroy deletes it, never forgets)
    doc = json.loads(ok(cli("state", "pull", cwd=root)).stdout)
    found = [r["address"] for r in doc["resources"] if r.get("origin", "created") != "created"]
    assert not found, f"recorded as found, not created: {found} (kill points {created})"
    assert "No changes" in ok(cli("plan", cwd=root)).stdout
    change = ("-var", "tag=two", "-var", "cap=3")
    updated = chain(cli, moto, world, root, "apply", *one, *change)
    assert world.bucket_tags(f"tectum-logs-{suffix}") == {"team": "two"}
    assert "No changes" in ok(cli("plan", *change, cwd=root)).stdout
    destroyed = chain(cli, moto, world, root, "destroy", *one, *change)
    assert world.everything() == NOTHING, destroyed
    assert state_names(cli, root) == NOTHING
    points = created + updated + destroyed
    # every mutating call of each phase, killed before and after
    assert len(points) >= 30, points
    for op in ("CreateBucket", "PutBucketTagging", "PutBucketVersioning", "CreateRole",
               "PutRolePolicy", "CreateTable", "UpdateTable", "TagResource", "TagRole",
               "DeleteBucket", "DeleteRole", "DeleteRolePolicy", "DeleteTable"):
        assert f"before:{op}" in points and f"after:{op}" in points, (op, points)
