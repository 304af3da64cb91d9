"""Terraform's CLI habits (issue 12 item 5): ``tectum init`` scaffolds a project, ``-chdir``
names the project directory for any command, and a mistyped command or flag gets a "did you
mean". Everything is made under ``tmp_path``, except the scaffolded stack's own directory
(``/tmp/tectum-NAME``, removed by its destroy)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

from tests.conftest import Result


def test_init_scaffolds_a_project_that_plans_applies_and_destroys(
        tmp_path: Path, tectum: Callable[..., Result]) -> None:
    name = f"init{uuid.uuid4().hex[:8]}"
    root = tmp_path / name
    res = tectum("init", str(root), cwd=tmp_path)
    assert res.returncode == 0, res.output
    assert "wrote stack.py, tectum.toml, .gitignore" in res.stdout
    assert ".tectum/" in (root / ".gitignore").read_text()
    assert f'name = "{name}"' in (root / "tectum.toml").read_text()
    world = Path(f"/tmp/tectum-{name}")
    try:
        assert tectum("-chdir", str(root), "validate").returncode == 0
        res = tectum(f"-chdir={root}", "apply", "-auto-approve", cwd=tmp_path)
        assert res.returncode == 0, res.output
        assert (world / "hello.txt").read_text() == "hello from tectum\n"
        (root / "stack.py").write_text("# mine\n")
        again = tectum("init", str(root), cwd=tmp_path)
        assert again.returncode == 0 and "Kept what was there already" in again.stdout
        assert (root / "stack.py").read_text() == "# mine\n"  # never overwritten
        (root / "stack.py").unlink()
        tectum("init", str(root), cwd=tmp_path)
        res = tectum("destroy", "-auto-approve", str(root), cwd=tmp_path)
        assert res.returncode == 0, res.output
        assert not world.exists()
    finally:
        if world.exists():
            import shutil

            shutil.rmtree(world)


def test_chdir_that_does_not_exist_is_a_diagnostic(
        tmp_path: Path, tectum: Callable[..., Result]) -> None:
    res = tectum("-chdir", str(tmp_path / "nope"), "plan", cwd=tmp_path)
    assert res.returncode == 1 and "Cannot change directory" in res.stderr, res.output
    assert "Traceback" not in res.output


def test_did_you_mean(tmp_path: Path, tectum: Callable[..., Result]) -> None:
    res = tectum("aply", cwd=tmp_path)
    assert res.returncode == 2 and "Did you mean apply?" in res.stderr, res.output
    res = tectum("plan", "-auto-aprove", cwd=tmp_path)
    assert res.returncode == 2 and "Did you mean -auto-approve" in res.stderr, res.output
    res = tectum("state", "lst", cwd=tmp_path)
    assert res.returncode == 2 and "Did you mean list?" in res.stderr, res.output
    # an option of another command is named as such, not "did you mean" itself
    res = tectum("show", "-var", "x=1", cwd=tmp_path)
    assert res.returncode == 2, res.output
    assert "tectum show does not take -var: `tectum show -h` lists its options." in res.stderr
    assert "Did you mean" not in res.stderr, res.output


def test_plan_shows_a_new_files_content_masked(
        tmp_path: Path, tectum: Callable[..., Result]) -> None:
    """A new file's content is shown (its first 20 lines); a sensitive one is not (nor its
    size); a secret of several lines never shows, whole or in part."""
    world = tmp_path / "world"
    (tmp_path / "stack.py").write_text(
        "from tectum import var\nfrom tectum.host import File\n"
        'pw = var("pw", str, default="s3cret-Value-9", sensitive=True)\n'
        f'File("a", path="{world}/a", content="first line\\nsecond line\\n")\n'
        f'File("s", path="{world}/s", content=f"user=x\\npassword={{pw}}\\n")\n'
        f'File("big", path="{world}/big", content="".join(f"l{{i}}\\n" for i in range(25)))\n'
        'key = var("key", str, default="-----BEGIN KEY-----\\nAAAAsecretBBBB\\n'
        '-----END KEY-----\\n", sensitive=True)\n'
        f'File("k", path="{world}/k", content=key)\n')
    res = tectum("plan", cwd=tmp_path)
    assert res.returncode == 0, res.output
    out = res.stdout
    assert "content: (2 lines, 23 bytes)\n        | first line\n        | second line\n" in out
    assert out.count("content: (sensitive value)") == 2 and "s3cret-Value-9" not in out
    assert "AAAAsecretBBBB" not in out and "BEGIN KEY" not in out
    assert "        | l19\n        ... and 5 more lines" in out and "| l20" not in out


def test_verbose_lists_the_command_log(tmp_path: Path, tectum: Callable[..., Result]) -> None:
    out = tmp_path / "out"
    (tmp_path / "stack.py").write_text(
        "from tectum.host import Command, File\n"
        f'f = File("a", path="{out}", content="x\\n")\n'
        f'Command("c", command=["touch", "{tmp_path}/ran"], creates="{tmp_path}/ran",'
        " depends_on=[f])\n")
    res = tectum("-v", "apply", "-auto-approve", cwd=tmp_path)
    assert res.returncode == 0, res.output
    assert "Command log (2 operations; * changes something):" in res.stderr
    assert f"* [local] write path={out} bytes=2" in res.stderr
    assert f"* [local] $ touch {tmp_path}/ran" in res.stderr
    again = tectum("-v", "apply", "-auto-approve", cwd=tmp_path)
    assert "Command log: nothing was run on a host." in again.stderr, again.output


def test_a_reference_inside_a_list_or_table_shows_as_known_after_apply() -> None:
    """The plan view never shows a reference's raw token: inside lists and tables an unknown
    value reads "(known after apply)" (as Terraform's plan shows it)."""
    from tectum.cli.views import UNKNOWN_TEXT, _fmt
    from tectum.values import token

    ref = token("aws_security_group.web", "id")
    assert _fmt([ref, "sg-1"]) == f'[{UNKNOWN_TEXT}, "sg-1"]'
    assert _fmt({"groups": [ref], "name": "x"}) == f'{{"groups": [{UNKNOWN_TEXT}], "name": "x"}}'
    assert _fmt(ref) == UNKNOWN_TEXT and _fmt("plain") == '"plain"'
    assert "${tectum:" not in _fmt([f"prefix-{ref}"])
