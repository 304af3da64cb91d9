"""``tectum state rm`` and ``tectum state mv`` (Terraform's): forgetting a resource leaves its
object alone; renaming one in the code and in state makes the next plan a no-op, not a delete
and a create. Everything is made under ``tmp_path``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.conftest import Result


def _project(tmp_path: Path, names: tuple[str, str] = ("a", "b")) -> tuple[Path, Path]:
    root, world = tmp_path / "proj", tmp_path / "world"
    root.mkdir(exist_ok=True)
    world.mkdir(exist_ok=True)
    (root / "stack.py").write_text(
        "from tectum.host import Directory, File\n"
        f'd = Directory("{names[0]}", path="{world}/d")\n'
        f'File("{names[1]}", path=f"{{d.path}}/f", content="x\\n")\n')
    return root, world


def test_state_rm_forgets_and_leaves_the_object(
        tmp_path: Path, tectum: Callable[..., Result]) -> None:
    root, world = _project(tmp_path)
    assert tectum("apply", "-auto-approve", cwd=root).returncode == 0
    res = tectum("state", "rm", "file.b", cwd=root)
    assert res.returncode == 0, res.output
    assert "Removed file.b" in res.stdout
    assert tectum("state", "list", cwd=root).stdout.split() == ["directory.a"]
    assert (world / "d" / "f").read_text() == "x\n"  # left as it is
    # the code still declares it: the next plan adopts it (it already matches)
    plan = tectum("plan", "-detailed-exitcode", cwd=root)
    assert plan.returncode == 2 and "file.b" in plan.stdout, plan.output
    assert tectum("apply", "-auto-approve", cwd=root).returncode == 0
    assert sorted(tectum("state", "list", cwd=root).stdout.split()) == ["directory.a", "file.b"]
    # adopted, it counts as found: destroy forgets it rather than deleting it
    destroy = tectum("destroy", "-auto-approve", cwd=root)
    assert destroy.returncode == 0 and "forgotten" in destroy.stdout, destroy.output


def test_state_rm_of_an_unknown_address_removes_nothing(
        tmp_path: Path, tectum: Callable[..., Result]) -> None:
    root, _ = _project(tmp_path)
    assert tectum("apply", "-auto-approve", cwd=root).returncode == 0
    res = tectum("state", "rm", "file.b", "file.nope", cwd=root)
    assert res.returncode == 1
    assert "No such resource in state" in res.stderr and "file.nope" in res.stderr
    assert "Traceback" not in res.output
    assert sorted(tectum("state", "list", cwd=root).stdout.split()) == ["directory.a", "file.b"]


def test_state_mv_after_a_rename_plans_nothing(
        tmp_path: Path, tectum: Callable[..., Result]) -> None:
    root, world = _project(tmp_path)
    assert tectum("apply", "-auto-approve", cwd=root).returncode == 0
    _project(tmp_path, ("top", "page"))  # renamed in the code
    for src, dst in (("directory.a", "directory.top"), ("file.b", "file.page")):
        res = tectum("state", "mv", src, dst, cwd=root)
        assert res.returncode == 0, res.output
        assert f"Moved {src} to {dst}" in res.stdout
    plan = tectum("plan", "-detailed-exitcode", cwd=root)
    assert plan.returncode == 0, plan.output
    doc = json.loads(tectum("state", "pull", cwd=root).stdout)
    records = {r["address"]: r for r in doc["resources"]}
    assert sorted(records) == ["directory.top", "file.page"]
    assert records["file.page"]["dependencies"] == ["directory.top"]  # (followed the move)
    assert (world / "d" / "f").exists()


def test_state_mv_refusals(tmp_path: Path, tectum: Callable[..., Result]) -> None:
    root, _ = _project(tmp_path)
    assert tectum("apply", "-auto-approve", cwd=root).returncode == 0
    for args, summary in (
            (("file.nope", "file.x"), "No such resource in state"),
            (("file.b", "directory.a"), "Destination already in state"),
            (("file.b", "symlink.b"), "Cannot move to another resource type"),
            (("file.b", 'host["web"].file.b'), "Cannot move to another host"),
            (("file.b", "not an address"), "Invalid address")):
        res = tectum("state", "mv", *args, cwd=root)
        assert res.returncode == 1, (args, res.output)
        assert summary in res.stderr and "Traceback" not in res.output, (args, res.output)
    assert sorted(tectum("state", "list", cwd=root).stdout.split()) == ["directory.a", "file.b"]


def test_state_edits_wait_for_an_interrupted_run_to_settle(
        tmp_path: Path, tectum: Callable[..., Result]) -> None:
    """A killed run's intents without results are what lets the next plan find its objects:
    `state rm`/`state mv` would drop them, so they are refused until an apply settles them."""
    from tectum.backends.base import Intent
    from tectum.backends.sqlite import SQLiteBackend

    root, world = _project(tmp_path)
    assert tectum("apply", "-auto-approve", cwd=root).returncode == 0
    backend = SQLiteBackend(str(root / ".tectum" / "state.db"))
    try:
        serial = backend.read().serial
        backend.intend(serial, [Intent("file.c", "create", "file", {"path": f"{world}/c"})])
    finally:
        backend.close()
    for args in (("rm", "file.b"), ("mv", "file.b", "file.z")):
        res = tectum("state", *args, cwd=root)
        assert res.returncode == 1, res.output
        assert "An interrupted run is not settled" in res.stderr and "file.c" in res.stderr
    assert sorted(tectum("state", "list", cwd=root).stdout.split()) == ["directory.a", "file.b"]
    assert tectum("apply", "-auto-approve", cwd=root).returncode == 0
    assert tectum("state", "rm", "file.b", cwd=root).returncode == 0
