"""Terraform's ``-target`` and ``-replace`` (issue 12 item 5). Everything is made under
``tmp_path``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.conftest import Result


def _write(root: Path, world: Path, a: str, b: str, extra: str = "") -> None:
    (root / "stack.py").write_text(
        "from tectum import output\n"
        "from tectum.host import Directory, File\n"
        "from tectum.random import Password\n"
        f'd = Directory("d", path="{world}/d")\n'
        f'File("a", path=f"{{d.path}}/a", content="{a}\\n")\n'
        f'File("b", path="{world}/b", content="{b}\\n")\n'
        'pw = Password("pw", length=16)\n'
        'output("pw", pw.result, sensitive=True)\n' + extra)


def _setup(tmp_path: Path, tectum: Callable[..., Result]) -> tuple[Path, Path]:
    root, world = tmp_path / "proj", tmp_path / "world"
    root.mkdir()
    world.mkdir()
    _write(root, world, "a1", "b1")
    res = tectum("apply", "-auto-approve", cwd=root)
    assert res.returncode == 0, res.output
    return root, world


def test_target_plans_and_applies_only_the_target(
        tmp_path: Path, tectum: Callable[..., Result]) -> None:
    root, world = _setup(tmp_path, tectum)
    _write(root, world, "a2", "b2")
    plan = tectum("plan", "-target", "file.a", cwd=root)
    assert plan.returncode == 0, plan.output
    assert "~ file.a" in plan.stdout and "file.b" not in plan.stdout
    assert "Resource targeting is in effect" in plan.stderr
    res = tectum("apply", "-auto-approve", "-target", "file.a", cwd=root)
    assert res.returncode == 0, res.output
    assert (world / "d" / "a").read_text() == "a2\n"
    assert (world / "b").read_text() == "b1\n"  # not targeted: left for the next full apply
    full = tectum("plan", "-detailed-exitcode", cwd=root)
    assert full.returncode == 2 and "~ file.b" in full.stdout and "file.a" not in full.stdout


def test_target_takes_what_the_target_depends_on(
        tmp_path: Path, tectum: Callable[..., Result]) -> None:
    root, world = _setup(tmp_path, tectum)
    _write(root, world, "a1", "b2",
           f'e = Directory("e", path="{world}/e")\n'
           'File("c", path=f"{e.path}/c", content="c\\n")\n')
    res = tectum("apply", "-auto-approve", "-target", "file.c", cwd=root)
    assert res.returncode == 0, res.output
    assert "2 added" in res.stdout
    assert (world / "e" / "c").read_text() == "c\n" and (world / "b").read_text() == "b1\n"


def test_destroy_target_takes_its_dependents(
        tmp_path: Path, tectum: Callable[..., Result]) -> None:
    root, world = _setup(tmp_path, tectum)
    res = tectum("destroy", "-auto-approve", "-target", "directory.d", cwd=root)
    assert res.returncode == 0, res.output
    listed = tectum("state", "list", cwd=root).stdout.split()
    assert sorted(listed) == ["file.b", "random_password.pw"]
    assert not (world / "d").exists() and (world / "b").exists()


def test_replace_makes_the_object_anew(tmp_path: Path, tectum: Callable[..., Result]) -> None:
    root, _ = _setup(tmp_path, tectum)
    before = tectum("output", "pw", "-raw", "-reveal", cwd=root).stdout
    plan = tectum("plan", "-replace", "random_password.pw", "-detailed-exitcode", cwd=root)
    assert plan.returncode == 2, plan.output
    assert "replaced as requested (-replace)" in plan.stdout
    res = tectum("apply", "-auto-approve", "-replace", "random_password.pw", cwd=root)
    assert res.returncode == 0 and "1 replaced" in res.stdout, res.output
    after = tectum("output", "pw", "-raw", "-reveal", cwd=root).stdout
    assert len(after.strip()) == 16 and after != before
    assert tectum("plan", "-detailed-exitcode", cwd=root).returncode == 0


def test_unknown_addresses_and_saved_plans_are_refused(
        tmp_path: Path, tectum: Callable[..., Result]) -> None:
    root, _ = _setup(tmp_path, tectum)
    for flag in ("-target", "-replace"):
        res = tectum("plan", flag, "file.nope", cwd=root)
        assert res.returncode == 1 and "Resource not found" in res.stderr, res.output
        assert "file.nope" in res.stderr and "Traceback" not in res.output
    assert tectum("plan", "-out", "p.plan", cwd=root).returncode == 0
    res = tectum("apply", "p.plan", "-target", "file.a", cwd=root)
    assert res.returncode == 1 and "go with the plan" in res.stderr, res.output


def test_replace_is_refused_where_it_cannot_make_the_object_anew(
        tmp_path: Path, tectum: Callable[..., Result]) -> None:
    root, world = _setup(tmp_path, tectum)
    res = tectum("plan", "-replace", "directory.d", cwd=root)
    assert res.returncode == 1 and "Cannot replace" in res.stderr, res.output
    assert "delete everything in it" in res.stderr
    assert (world / "d" / "a").exists()


def test_replace_keeps_who_made_the_object_and_beats_ignore_changes(
        tmp_path: Path, tectum: Callable[..., Result]) -> None:
    root, world = tmp_path / "proj", tmp_path / "world"
    root.mkdir()
    world.mkdir()
    (world / "found").write_text("x\n")  # there before tectum: adopted, so "found"
    (root / "stack.py").write_text(
        "from tectum.host import File\n"
        f'File("f", path="{world}/found", content="x\\n", ignore_changes=["content"])\n')
    assert tectum("apply", "-auto-approve", cwd=root).returncode == 0
    plan = tectum("plan", "-replace", "file.f", cwd=root)
    assert "replaced as requested (-replace)" in plan.stdout, plan.output
    assert tectum("apply", "-auto-approve", "-replace", "file.f", cwd=root).returncode == 0
    doc = json.loads(tectum("state", "pull", cwd=root).stdout)
    assert doc["resources"][0].get("origin") == "found"  # destroy still only forgets it
    assert tectum("destroy", "-auto-approve", cwd=root).returncode == 0
    assert (world / "found").exists()


def test_target_brings_the_restarts_and_runs_it_causes(
        tmp_path: Path, tectum: Callable[..., Result]) -> None:
    root, world = tmp_path / "proj", tmp_path / "world"
    root.mkdir()
    world.mkdir()

    def write(text: str) -> None:
        (root / "stack.py").write_text(
            "from tectum.host import Command, File\n"
            f'conf = File("conf", path="{world}/conf", content="{text}\\n")\n'
            f'Command("reload", command="echo ran >> {world}/runs", run_on=[conf])\n'
            f'File("other", path="{world}/other", content="{text}\\n")\n')
    write("v1")
    assert tectum("apply", "-auto-approve", cwd=root).returncode == 0
    write("v2")
    res = tectum("apply", "-auto-approve", "-target", "file.conf", cwd=root)
    assert res.returncode == 0, res.output
    assert (world / "runs").read_text().count("ran") == 2  # created, then the targeted change
    assert (world / "other").read_text() == "v1\n"


def test_targeted_destroy_keeps_outputs_and_rollback_keeps_the_rest(
        tmp_path: Path, tectum: Callable[..., Result]) -> None:
    root, world = _setup(tmp_path, tectum)
    _write(root, world, "a2", "b1")
    assert tectum("apply", "-auto-approve", "-target", "file.a", cwd=root).returncode == 0
    serial = json.loads(tectum("state", "pull", cwd=root).stdout)["serial"]
    _write(root, world, "a3", "b3")
    assert tectum("apply", "-auto-approve", cwd=root).returncode == 0
    res = tectum("rollback", "--to", str(serial), "-auto-approve", cwd=root)
    assert res.returncode == 0, res.output
    assert (world / "d" / "a").read_text() == "a2\n" and (world / "b").read_text() == "b1\n"
    res = tectum("destroy", "-auto-approve", "-target", "file.b", cwd=root)
    assert res.returncode == 0, res.output
    assert "pw" in json.loads(tectum("state", "pull", cwd=root).stdout)["outputs"]


def test_refresh_false_with_a_new_path_replaces(
        tmp_path: Path, tectum: Callable[..., Result]) -> None:
    root, world = _setup(tmp_path, tectum)
    (root / "stack.py").write_text((root / "stack.py").read_text().replace(
        f'"{world}/b"', f'"{world}/b2"'))
    plan = tectum("plan", "-refresh=false", cwd=root)
    assert plan.returncode == 0, plan.output
    assert "-/+ file.b" in plan.stdout, plan.output
