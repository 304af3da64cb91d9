"""``moved(old, new)`` declarations (Terraform's ``moved`` blocks, issue 12 item 5): a rename
in the code moves the state record instead of deleting and creating the object; a rename that
also changes where the object lives replaces it, leaving nothing behind. Everything is made
under ``tmp_path``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.conftest import Result


def _write(root: Path, body: str) -> None:
    (root / "stack.py").write_text(
        "from tectum import moved\nfrom tectum.host import File\n" + body)


def _setup(tmp_path: Path, tectum: Callable[..., Result]) -> tuple[Path, Path]:
    root, world = tmp_path / "proj", tmp_path / "world"
    root.mkdir()
    world.mkdir()
    _write(root, f'File("a", path="{world}/f", content="x\\n")\n')
    assert tectum("apply", "-auto-approve", cwd=root).returncode == 0
    return root, world


def _addresses(tectum: Callable[..., Result], root: Path) -> list[str]:
    return sorted(r["address"] for r in json.loads(
        tectum("state", "pull", cwd=root).stdout)["resources"])


def test_a_declared_move_keeps_the_object(tmp_path: Path,
                                          tectum: Callable[..., Result]) -> None:
    root, world = _setup(tmp_path, tectum)
    _write(root, f'b = File("b", path="{world}/f", content="y\\n")\nmoved("file.a", b)\n')
    plan = tectum("plan", cwd=root)
    assert plan.returncode == 0, plan.output
    assert "moved from file.a" in plan.stdout and "- file.a" not in plan.stdout
    assert tectum("apply", "-auto-approve", cwd=root).returncode == 0
    assert _addresses(tectum, root) == ["file.b"]
    assert (world / "f").read_text() == "y\n"
    assert tectum("plan", "-detailed-exitcode", cwd=root).returncode == 0


def test_a_move_with_a_new_path_replaces_and_leaves_nothing(
        tmp_path: Path, tectum: Callable[..., Result]) -> None:
    root, world = _setup(tmp_path, tectum)
    _write(root, f'b = File("b", path="{world}/g", content="x\\n")\nmoved("file.a", "file.b")\n')
    res = tectum("apply", "-auto-approve", cwd=root)
    assert res.returncode == 0, res.output
    assert not (world / "f").exists() and (world / "g").read_text() == "x\n"
    assert _addresses(tectum, root) == ["file.b"]


def test_invalid_moves_are_diagnostics(tmp_path: Path,
                                       tectum: Callable[..., Result]) -> None:
    root, world = _setup(tmp_path, tectum)
    for body, why in (
            (f'File("b", path="{world}/f", content="x\\n")\nmoved("file.a", "file.c")\n',
             "file.c is not declared"),
            (f'File("a", path="{world}/f", content="x\\n")\n'
             f'File("b", path="{world}/g", content="x\\n")\nmoved("file.a", "file.b")\n',
             "file.a is still declared"),
            ('moved("not an address", "file.b")\n', "not a resource address")):
        _write(root, body)
        res = tectum("plan", cwd=root)
        assert res.returncode == 1, (body, res.output)
        assert why in res.stderr and "Traceback" not in res.output, res.output
    assert _addresses(tectum, root) == ["file.a"]


def test_a_move_to_another_host_is_refused(tmp_path: Path,
                                          tectum: Callable[..., Result]) -> None:
    root, world = _setup(tmp_path, tectum)
    (root / "inventory.toml").write_text('[hosts.h1]\nconnector = "local"\n')
    _write(root, "from tectum import apply_role\n"
           f'apply_role(lambda host: File("a", path="{world}/f", content="x\\n"), "h1")\n'
           "moved(\"file.a\", 'host[\"h1\"].file.a')\n")
    res = tectum("plan", cwd=root)
    assert res.returncode == 1 and "an object stays on its host" in res.stderr, res.output
