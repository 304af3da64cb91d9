"""A directory or file planned as a create that something earlier in the same apply made
(a package installing its own configuration) — found by the gallery's nginx and memcached roles
(issue 12 item 6). The apply makes it as planned (no "something is there" failure) and records
it as **found**, so destroy leaves it to what made it instead of deleting a package's file."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from tests.conftest import run_tectum


def test_objects_made_meanwhile_are_made_as_planned_and_recorded_as_found(tmp_path: Path
                                                                            ) -> None:
    world = tmp_path / "world"
    world.mkdir()
    root = tmp_path / "proj"
    root.mkdir()
    (root / "stack.py").write_text(f'''
from tectum.host import Command, Directory, File
W = {str(world)!r}
pkg = Command("package", command=f"mkdir -p {{W}}/etc && echo packaged > {{W}}/etc/app.conf",
              creates=f"{{W}}/etc/app.conf")
Directory("etc", path=f"{{W}}/etc", mode="0750", depends_on=[pkg])
File("conf", path=f"{{W}}/etc/app.conf", content="mine\\n", depends_on=[pkg])
File("new", path=f"{{W}}/etc/new.conf", content="new\\n", depends_on=[pkg])
''')
    plan = run_tectum("plan", str(root))
    assert plan.returncode == 0, plan.output
    assert "+ directory.etc" in plan.stdout and "+ file.conf" in plan.stdout
    applied = run_tectum("apply", "-auto-approve", str(root))
    assert applied.returncode == 0, applied.output
    assert stat.S_IMODE(os.stat(world / "etc").st_mode) == 0o750
    assert (world / "etc" / "app.conf").read_text() == "mine\n"
    doc = json.loads(run_tectum("state", "pull", str(root)).stdout)
    origin = {r["address"]: r.get("origin", "created") for r in doc["resources"]}
    assert origin["directory.etc"] == "found" and origin["file.conf"] == "found"
    assert origin["file.new"] == "created"
    again = run_tectum("plan", "-detailed-exitcode", str(root))
    assert again.returncode == 0, again.output
    destroyed = run_tectum("destroy", "-auto-approve", str(root))
    assert destroyed.returncode == 0, destroyed.output
    # what the "package" made stays; what tectum made goes
    assert (world / "etc" / "app.conf").exists() and (world / "etc").is_dir()
    assert not (world / "etc" / "new.conf").exists()


def test_a_symlink_made_meanwhile_is_recorded_as_found(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "stack.py").write_text(f'''
from tectum.host import Command, Symlink
pkg = Command("package", command="ln -s /etc/hostname {tmp_path}/link",
              creates="{tmp_path}/link")
Symlink("link", path="{tmp_path}/link", target="/etc/hostname", depends_on=[pkg])
''')
    assert run_tectum("apply", "-auto-approve", str(root)).returncode == 0
    doc = json.loads(run_tectum("state", "pull", str(root)).stdout)
    assert {r["address"]: r.get("origin", "created") for r in doc["resources"]}[
        "symlink.link"] == "found"
    assert run_tectum("destroy", "-auto-approve", str(root)).returncode == 0
    assert os.readlink(tmp_path / "link") == "/etc/hostname"
