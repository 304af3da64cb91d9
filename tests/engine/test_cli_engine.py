"""The engine end to end through the real CLI (``python -m tectum`` in a subprocess).

Every stack manages only files, directories and symlinks under ``tmp_path``; nothing outside
it is touched, so the suite can run any number of times.
"""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Result, tectum_env

HEADER = """\
from tectum import output, var
from tectum.host import Directory, File, Symlink

W = {world!r}
"""


@dataclass
class Proj:
    """A project directory (``root``) whose stack manages objects under ``world``."""

    root: Path
    world: Path
    tectum: Callable[..., Result]

    def write(self, body: str) -> None:
        text = HEADER.format(world=str(self.world)) + textwrap.dedent(body)
        (self.root / "stack.py").write_text(text)

    def run(self, *args: str, input: str | None = None,
            env: dict[str, str] | None = None) -> Result:
        return self.tectum(*args, cwd=self.root, input=input, env=env)

    def ok(self, *args: str, input: str | None = None,
           env: dict[str, str] | None = None) -> Result:
        res = self.run(*args, input=input, env=env)
        assert res.returncode == 0, f"tectum {' '.join(args)} failed:\n{res.output}"
        return res

    def apply(self, *args: str, env: dict[str, str] | None = None) -> Result:
        return self.ok("apply", "--auto-approve", *args, env=env)

    def state_list(self) -> list[str]:
        return self.ok("state", "list").stdout.split()

    def detailed(self, *args: str, env: dict[str, str] | None = None) -> int:
        res = self.run("plan", "--detailed-exitcode", *args, env=env)
        assert res.returncode in (0, 2), res.output
        return res.returncode


@pytest.fixture
def proj(tmp_path: Path, tectum: Callable[..., Result]) -> Proj:
    root = tmp_path / "proj"
    world = tmp_path / "world"
    root.mkdir()
    world.mkdir()
    return Proj(root, world, tectum)


def mutations(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    entries = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [e for e in entries if e.get("mutating")]


# -- references --------------------------------------------------------------------------------

def test_reference_in_fstring_orders_and_resolves(proj: Proj) -> None:
    proj.write("""
        d = Directory("d", path=f"{W}/d")
        a = File("a", path=f"{d.path}/a.txt", content="hello\\n")
        b = File("b", path=f"{W}/b.txt", content=f"a is at {a.path}\\n")
    """)
    dot = proj.ok("graph").stdout
    assert '"file.a" -> "directory.d";' in dot
    assert '"file.b" -> "file.a";' in dot

    plan = proj.ok("plan").stdout
    assert "Plan: 3 to add, 0 to change, 0 to replace, 0 to destroy." in plan
    proj.apply()
    assert (proj.world / "d" / "a.txt").read_text() == "hello\n"
    assert (proj.world / "b.txt").read_text() == f"a is at {proj.world}/d/a.txt\n"
    assert proj.detailed() == 0


def test_reference_inside_template_vars(proj: Proj) -> None:
    (proj.root / "templates").mkdir()
    (proj.root / "templates" / "app.conf.j2").write_text(
        "# for {{ name }}\ninclude {{ include }}\n")
    proj.write("""
        inc = File("inc", path=f"{W}/inc.conf", content="x = 1\\n")
        File("app", path=f"{W}/app.conf", template="templates/app.conf.j2",
             vars={"name": "web", "include": inc.path})
    """)
    assert '"file.app" -> "file.inc";' in proj.ok("graph").stdout
    proj.apply()
    assert (proj.world / "app.conf").read_text() == \
        f"# for web\ninclude {proj.world}/inc.conf\n"
    assert proj.detailed() == 0


# -- plan / apply -----------------------------------------------------------------------------

def test_detailed_exitcode_then_apply_then_clean(proj: Proj) -> None:
    proj.write("""
        File("a", path=f"{W}/a.txt", content="a\\n")
    """)
    assert proj.detailed() == 2
    assert not (proj.world / "a.txt").exists()  # plan touches nothing
    proj.apply()
    assert proj.detailed() == 0
    assert "No changes." in proj.ok("plan").stdout


def test_saved_plan_applies_once_then_is_stale(proj: Proj, tmp_path: Path) -> None:
    proj.write("""
        File("a", path=f"{W}/a.txt", content="a\\n")
    """)
    planfile = tmp_path / "a.plan"
    res = proj.ok("plan", "-out", str(planfile))
    assert "Saved the plan" in res.stdout
    assert not (proj.world / "a.txt").exists()

    proj.ok("apply", str(planfile))
    assert (proj.world / "a.txt").read_text() == "a\n"
    assert proj.state_list() == ["file.a"]

    again = proj.run("apply", str(planfile))
    assert again.returncode == 1
    assert "Saved plan is stale" in again.output


def test_stale_when_state_moved_on_between_plan_and_apply(proj: Proj, tmp_path: Path) -> None:
    proj.write("""
        File("a", path=f"{W}/a.txt", content="a\\n")
    """)
    planfile = tmp_path / "a.plan"
    proj.ok("plan", "-out", str(planfile))
    proj.apply()  # something else applied meanwhile
    (proj.world / "a.txt").write_text("hand edit\n")
    res = proj.run("apply", str(planfile))
    assert res.returncode == 1
    assert "Saved plan is stale" in res.output
    assert (proj.world / "a.txt").read_text() == "hand edit\n"


def test_saved_plan_refused_when_the_world_moved(proj: Proj, tmp_path: Path) -> None:
    """Design decision 2: applying a saved plan re-reads what it changes first; a hand edit
    since the plan (a file it updates, a file that appeared where it creates one) refuses the
    whole plan before anything is done. Objects the plan does not touch may move freely."""
    proj.write("""
        File("a", path=f"{W}/a.txt", content="a\\n")
        File("b", path=f"{W}/b.txt", content="b\\n")
        File("c", path=f"{W}/c.txt", content="c\\n")
    """)
    proj.apply()
    proj.write("""
        File("a", path=f"{W}/a.txt", content="a2\\n", mode="0600")
        File("b", path=f"{W}/b.txt", content="b\\n")
        File("c", path=f"{W}/c.txt", content="c\\n")
        File("d", path=f"{W}/d.txt", content="d\\n")
    """)
    planfile = tmp_path / "next.plan"
    proj.ok("plan", "-out", str(planfile))
    (proj.world / "a.txt").write_text("hand edit\n")
    (proj.world / "d.txt").write_text("someone else's\n")
    (proj.world / "b.txt").write_text("not in the plan\n")  # b is a no-op: not checked
    res = proj.run("apply", str(planfile))
    assert res.returncode == 1 and "Traceback" not in res.output
    assert "The world changed since the plan" in res.output, res.output
    assert "file.a: content changed" in res.output
    assert "file.d: was absent, now exists" in res.output
    assert "file.b" not in res.output and "Nothing was applied" in res.output
    assert (proj.world / "a.txt").read_text() == "hand edit\n"
    assert (proj.world / "d.txt").read_text() == "someone else's\n"
    # the world put back as the plan saw it: the same plan applies
    (proj.world / "a.txt").write_text("a\n")
    (proj.world / "d.txt").unlink()
    proj.ok("apply", str(planfile))
    assert (proj.world / "a.txt").read_text() == "a2\n" and (proj.world / "d.txt").exists()


def test_world_moved_while_the_prompt_waited(proj: Proj) -> None:
    """The same check after an interactive approval: the prompt may wait for minutes."""
    import subprocess
    import sys

    proj.write("""
        File("a", path=f"{W}/a.txt", content="a\\n")
    """)
    env = tectum_env()
    proc = subprocess.Popen([sys.executable, "-m", "tectum", "apply"], cwd=proj.root, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdin is not None
    seen = ""
    while "Enter a value" not in seen:
        char = proc.stdout.read(1)
        assert char, f"no prompt; output so far:\n{seen}"
        seen += char
    (proj.world / "a.txt").write_text("made while you read the plan\n")
    out, err = proc.communicate("yes\n", timeout=60)
    assert proc.returncode == 1, out + err
    assert "The world changed since the plan" in err and "file.a: was absent, now exists" in err
    assert "Run the command again" in err
    assert (proj.world / "a.txt").read_text() == "made while you read the plan\n"
    # answered at once, nothing moved: it applies
    res = proj.ok("apply", input="yes\n")
    assert "Apply complete" in res.stdout, res.output
    assert (proj.world / "a.txt").read_text() == "a\n"


def test_altered_saved_plan_is_refused(proj: Proj, tmp_path: Path) -> None:
    proj.write("""
        File("a", path=f"{W}/a.txt", content="original\\n")
    """)
    planfile = tmp_path / "a.plan"
    proj.ok("plan", "-out", str(planfile))
    data = planfile.read_bytes()
    assert b"original" in data
    planfile.write_bytes(data.replace(b"original", b"tampered"))

    res = proj.run("apply", str(planfile))
    assert res.returncode == 1
    assert "altered" in res.output
    assert not (proj.world / "a.txt").exists()
    assert proj.state_list() == []


def test_parallelism_one(proj: Proj) -> None:
    proj.write("""
        d = Directory("d", path=f"{W}/d")
        for i in range(6):
            File(f"f{i}", path=f"{d.path}/f{i}.txt", content=f"{i}\\n")
    """)
    res = proj.ok("apply", "--auto-approve", "--parallelism", "1")
    assert "7 added" in res.stdout
    assert sorted(p.name for p in (proj.world / "d").iterdir()) == \
        [f"f{i}.txt" for i in range(6)]
    assert proj.detailed("--parallelism", "1") == 0


# -- failure containment ------------------------------------------------------------------------

FAILING_STACK = """
    bad = File("bad", path=f"{W}/missing/bad.txt", content="bad\\n")
    after = File("after", path=f"{W}/after.txt", content="after\\n", depends_on=[bad])
    File("free", path=f"{W}/free.txt", content="free\\n")
"""


def test_failure_is_contained(proj: Proj) -> None:
    proj.write(FAILING_STACK)
    res = proj.run("apply", "--auto-approve")
    assert res.returncode == 1
    out = res.output
    assert "file.bad: failed:" in out
    assert f"{proj.world}/missing" in out  # the reason names the missing directory
    assert "skipped: file.after: upstream file.bad failed" in out
    assert "Apply failed: 1 failed, 1 skipped" in out

    assert (proj.world / "free.txt").read_text() == "free\n"
    assert not (proj.world / "after.txt").exists()
    assert not (proj.world / "missing").exists()
    assert proj.state_list() == ["file.free"]

    # the fixed stack converges, and only the rest is left to do
    proj.write(FAILING_STACK + '    Directory("missing", path=f"{W}/missing")\n')
    plan = proj.ok("plan").stdout
    assert "Plan: 3 to add, 0 to change" in plan
    assert "file.free" not in plan
    proj.apply()
    assert (proj.world / "missing" / "bad.txt").read_text() == "bad\n"
    assert (proj.world / "after.txt").read_text() == "after\n"
    assert proj.state_list() == ["directory.missing", "file.after", "file.bad", "file.free"]
    assert proj.detailed() == 0


# -- the stack changes ----------------------------------------------------------------------------

def test_removed_resource_is_deleted(proj: Proj) -> None:
    proj.write("""
        File("keep", path=f"{W}/keep.txt", content="keep\\n")
        File("gone", path=f"{W}/gone.txt", content="gone\\n")
        Directory("dir", path=f"{W}/dir")
    """)
    proj.apply()
    (proj.world / "dir" / "inside").write_text("x")
    proj.write("""
        File("keep", path=f"{W}/keep.txt", content="keep\\n")
    """)
    plan = proj.ok("plan").stdout
    assert "- file.gone" in plan
    assert "- directory.dir" in plan
    assert "0 to add, 0 to change, 0 to replace, 2 to destroy" in plan
    proj.apply()
    assert not (proj.world / "gone.txt").exists()
    assert not (proj.world / "dir").exists()
    assert (proj.world / "keep.txt").read_text() == "keep\n"
    assert proj.state_list() == ["file.keep"]
    assert proj.detailed() == 0


def test_renamed_label_is_a_move(proj: Proj, tmp_path: Path) -> None:
    proj.write("""
        File("old_name", path=f"{W}/a.txt", content="a\\n")
    """)
    proj.apply()
    inode = (proj.world / "a.txt").stat().st_ino
    proj.write("""
        File("new_name", path=f"{W}/a.txt", content="a\\n")
    """)
    plan = proj.ok("plan").stdout
    assert "moved from file.old_name" in plan
    assert "0 to add, 0 to change, 0 to replace, 0 to destroy, 1 to move" in plan
    assert "- file.old_name" not in plan

    log = tmp_path / "commands.jsonl"
    proj.apply(env={"TECTUM_COMMAND_LOG": str(log)})
    assert mutations(log) == []
    assert (proj.world / "a.txt").stat().st_ino == inode
    assert proj.state_list() == ["file.new_name"]
    assert proj.detailed() == 0


def test_renamed_label_with_new_content_is_one_update(proj: Proj) -> None:
    proj.write("""
        File("old_name", path=f"{W}/a.txt", content="a\\n")
    """)
    proj.apply()
    proj.write("""
        File("new_name", path=f"{W}/a.txt", content="b\\n")
    """)
    plan = proj.ok("plan").stdout
    assert "moved from file.old_name" in plan
    assert "0 to add, 1 to change, 0 to replace, 0 to destroy" in plan
    proj.apply()
    assert (proj.world / "a.txt").read_text() == "b\n"
    assert proj.state_list() == ["file.new_name"]
    assert proj.detailed() == 0


def test_destroy_removes_everything(proj: Proj) -> None:
    proj.write("""
        d = Directory("d", path=f"{W}/d")
        a = File("a", path=f"{d.path}/a.txt", content="a\\n")
        Symlink("l", path=f"{W}/link", target=a.path)
        output("where", a.path)
    """)
    proj.apply()
    assert os.readlink(proj.world / "link") == f"{proj.world}/d/a.txt"
    res = proj.ok("destroy", "--auto-approve")
    assert "3 destroyed" in res.stdout
    assert list(proj.world.iterdir()) == []
    assert proj.state_list() == []
    assert proj.ok("output").stdout.strip() == ""
    assert "state is empty" in proj.ok("show").stdout
    # destroying again has nothing to do
    assert "No changes." in proj.ok("destroy", "--auto-approve").stdout


# -- inspection --------------------------------------------------------------------------------

def test_graph_prints_dot(proj: Proj) -> None:
    proj.write("""
        d = Directory("d", path=f"{W}/d")
        File("a", path=f"{W}/d/a.txt", content="a\\n")
        File("b", path=f"{W}/b.txt", content="b\\n", depends_on=[d])
        File("c", path=f"{W}/c.txt", content="c\\n")
    """)
    dot = proj.ok("graph").stdout
    assert dot.startswith("digraph tectum {")
    assert dot.rstrip().endswith("}")
    assert '"file.a" -> "directory.d";' in dot  # automatic: path under a managed directory
    assert '"file.b" -> "directory.d";' in dot  # depends_on
    assert '"file.c" [label = "file.c"];' in dot
    assert dot.count("->") == 2
    assert not (proj.world / "d").exists()


def test_outputs(proj: Proj) -> None:
    proj.write("""
        a = File("a", path=f"{W}/a.txt", content="a\\n")
        output("path", a.path)
        output("count", 3)
        output("secret", "hunter2", sensitive=True)
    """)
    res = proj.apply()
    assert f'path = "{proj.world}/a.txt"' in res.stdout
    assert "hunter2" not in res.output

    listing = proj.ok("output").stdout
    assert f'path = "{proj.world}/a.txt"' in listing
    assert "count = 3" in listing
    assert "secret = (sensitive value)" in listing
    assert "hunter2" not in listing

    assert proj.ok("output", "path").stdout.strip() == json.dumps(f"{proj.world}/a.txt")
    assert proj.ok("output", "path", "--raw").stdout.strip() == f"{proj.world}/a.txt"
    assert proj.ok("output", "count").stdout.strip() == "3"
    assert proj.ok("output", "secret").stdout.strip() == "(sensitive value)"

    data = json.loads(proj.ok("output", "--json").stdout)
    assert data["path"] == {"value": f"{proj.world}/a.txt", "sensitive": False}
    assert data["count"] == {"value": 3, "sensitive": False}
    assert data["secret"]["sensitive"] is True
    assert data["secret"]["value"] is None

    missing = proj.run("output", "nope")
    assert missing.returncode == 1
    assert "Output not found" in missing.output


def test_show_and_state_show(proj: Proj) -> None:
    proj.write("""
        a = File("a", path=f"{W}/a.txt", content="a\\n", mode="0640")
        Directory("d", path=f"{W}/d")
        output("p", a.path)
    """)
    proj.apply()
    shown = proj.ok("show").stdout
    assert "# file.a:" in shown
    assert "# directory.d:" in shown
    assert f'path           = "{proj.world}/a.txt"' in shown
    assert 'mode           = "0640"' in shown
    assert "content_sha256" in shown
    assert f'p = "{proj.world}/a.txt"' in shown

    one = proj.ok("state", "show", "file.a").stdout
    assert "# file.a:" in one
    assert "directory.d" not in one
    assert 'mode           = "0640"' in one

    state = json.loads(proj.ok("show", "--json").stdout)
    assert "file.a" in json.dumps(state)

    missing = proj.run("state", "show", "file.nope")
    assert missing.returncode == 1
    assert "No such resource in state" in missing.output


# -- variables ---------------------------------------------------------------------------------

VAR_STACK = """
    greeting = var("greeting", default="from-default")
    File("g", path=f"{W}/greeting.txt", content=f"{greeting}\\n")
    output("greeting", greeting)
"""


def test_variable_precedence(proj: Proj, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                             ) -> None:
    monkeypatch.delenv("TECTUM_VAR_greeting", raising=False)
    proj.write(VAR_STACK)
    target = proj.world / "greeting.txt"
    env = {"TECTUM_VAR_greeting": "from-env"}
    var_file = tmp_path / "vars.toml"
    var_file.write_text('greeting = "from-var-file"\n')

    def value(*args: str, env: dict[str, str] | None = None) -> str:
        proj.apply(*args, env=env)
        return target.read_text().strip()

    # default < env
    assert value() == "from-default"
    assert value(env=env) == "from-env"
    # env < tectum.toml
    (proj.root / "tectum.toml").write_text('[vars]\ngreeting = "from-toml"\n')
    assert value(env=env) == "from-toml"
    # tectum.toml < -var-file
    assert value("-var-file", str(var_file), env=env) == "from-var-file"
    # -var-file < -var
    assert value("-var-file", str(var_file), "-var", "greeting=from-cli", env=env) == "from-cli"
    assert value("-var", "greeting=from-cli") == "from-cli"
    assert proj.ok("output", "greeting", "--raw").stdout.strip() == "from-cli"


def test_typed_variable_from_env_and_cli(proj: Proj) -> None:
    proj.write("""
        port = var("port", int, default=80)
        File("p", path=f"{W}/port.txt", content=f"{port + 1}\\n")
    """)
    proj.apply(env={"TECTUM_VAR_port": "8080"})
    assert (proj.world / "port.txt").read_text() == "8081\n"
    proj.apply("-var", "port=9000")
    assert (proj.world / "port.txt").read_text() == "9001\n"
    bad = proj.run("plan", "-var", "port=notanumber")
    assert bad.returncode == 1
    assert "Invalid value for variable" in bad.output


def test_value_for_undeclared_variable_is_an_error(proj: Proj) -> None:
    proj.write(VAR_STACK)
    res = proj.run("plan", "-var", "nosuch=1")
    assert res.returncode == 1
    assert "undeclared variable" in res.output


# -- approval ----------------------------------------------------------------------------------

def test_apply_asks_and_yes_applies(proj: Proj) -> None:
    proj.write("""
        File("a", path=f"{W}/a.txt", content="a\\n")
    """)
    res = proj.run("apply", input="yes\n")
    assert res.returncode == 0, res.output
    assert "Only 'yes' will be accepted" in res.stdout
    assert "Apply complete!" in res.stdout
    assert (proj.world / "a.txt").read_text() == "a\n"


def test_apply_asks_and_no_cancels(proj: Proj) -> None:
    proj.write("""
        File("a", path=f"{W}/a.txt", content="a\\n")
    """)
    res = proj.run("apply", input="no\n")
    assert res.returncode == 1
    assert "Apply cancelled." in res.output
    assert not (proj.world / "a.txt").exists()
    assert proj.state_list() == []
    assert proj.detailed() == 2


def test_apply_without_stdin_refuses(proj: Proj) -> None:
    proj.write("""
        File("a", path=f"{W}/a.txt", content="a\\n")
    """)
    res = proj.run("apply")  # stdin is /dev/null
    assert res.returncode == 1
    assert "--auto-approve" in res.output
    assert not (proj.world / "a.txt").exists()


def test_destroy_asks_and_no_cancels(proj: Proj) -> None:
    proj.write("""
        File("a", path=f"{W}/a.txt", content="a\\n")
    """)
    proj.apply()
    res = proj.run("destroy", input="no\n")
    assert res.returncode == 1
    assert (proj.world / "a.txt").exists()
    assert proj.state_list() == ["file.a"]
