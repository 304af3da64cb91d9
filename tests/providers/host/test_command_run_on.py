"""``Command(run_on=[...])`` (issue 12 item 3, Puppet's ``refreshonly`` with ``subscribe``): the
command runs only in an apply where one of those resources changed — not when it is first
declared, not on a no-op — and a run a failure kept from happening is owed to the next apply.
Everything is made under ``tmp_path``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import Result


def _stack(root: Path, world: Path, content: str, fail: bool = False) -> None:
    cmd = "exit 3" if fail else f"echo ran >> {world}/runs"
    (root / "stack.py").write_text(
        "from tectum.host import Command, File\n"
        f'conf = File("conf", path="{world}/app.conf", content="{content}\\n")\n'
        f'Command("reload", command="{cmd}", run_on=[conf])\n')


def _runs(world: Path) -> int:
    runs = world / "runs"
    return len(runs.read_text().splitlines()) if runs.exists() else 0


def test_runs_only_when_a_watched_resource_changes(
        tmp_path: Path, tectum: Callable[..., Result]) -> None:
    root, world = tmp_path / "proj", tmp_path / "world"
    root.mkdir()
    world.mkdir()
    (world / "app.conf").write_text("v1\n")  # already as declared: nothing changes
    _stack(root, world, "v1")
    plan = tectum("plan", cwd=root)
    assert "only when a run_on resource changes" in plan.stdout, plan.output
    res = tectum("apply", "-auto-approve", cwd=root)
    assert res.returncode == 0, res.output
    assert _runs(world) == 0  # declared, recorded, not run: its file did not change
    assert tectum("plan", "-detailed-exitcode", cwd=root).returncode == 0
    _stack(root, world, "v2")
    plan = tectum("plan", cwd=root)
    assert "run (file.conf changed)" in plan.stdout, plan.output
    assert tectum("apply", "-auto-approve", cwd=root).returncode == 0
    assert _runs(world) == 1
    assert tectum("apply", "-auto-approve", cwd=root).returncode == 0
    assert _runs(world) == 1  # a no-op runs nothing
    (world / "app.conf").write_text("edited by hand\n")  # drift repaired: a change, so it runs
    assert tectum("apply", "-auto-approve", cwd=root).returncode == 0
    assert _runs(world) == 2 and (world / "app.conf").read_text() == "v2\n"


def test_a_failed_run_is_owed_to_the_next_apply(
        tmp_path: Path, tectum: Callable[..., Result]) -> None:
    root, world = tmp_path / "proj", tmp_path / "world"
    root.mkdir()
    world.mkdir()
    _stack(root, world, "v1")
    assert tectum("apply", "-auto-approve", cwd=root).returncode == 0
    assert _runs(world) == 1  # the file was created: a change
    _stack(root, world, "v2", fail=True)
    res = tectum("apply", "-auto-approve", cwd=root)
    assert res.returncode == 1 and "exited with code 3" in res.output, res.output
    _stack(root, world, "v2")  # fixed; the file is already v2
    plan = tectum("plan", cwd=root)
    assert "owed since an earlier run" in plan.stdout, plan.output
    assert tectum("apply", "-auto-approve", cwd=root).returncode == 0
    assert _runs(world) == 2
    assert tectum("plan", "-detailed-exitcode", cwd=root).returncode == 0
