"""A project written by the release before providers (tectum 0.1.0, state format 1) keeps
working (issue 11 item 3): its SQLite state and a plan it saved were made by that release and
are kept in ``data/release-0.1.0``: the project was ``/tmp/tectum-upgrade-test/proj`` (a
saved plan names its project directory) and manages ``/tmp/tectum-upgrade-test/world``; the
state records a first apply, the plan changes the file's text from ``v1`` to ``v2``. The
project and the world are put back there as that apply left them, then today's tectum reads,
plans and applies; the directory is removed afterwards."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tectum.state.model import FORMAT_VERSION
from tests.conftest import Result

DATA = Path(__file__).parent / "data" / "release-0.1.0"
BASE = Path("/tmp/tectum-upgrade-test")
WORLD = BASE / "world"


@pytest.fixture
def old_project() -> Iterator[Path]:
    if BASE.exists():
        pytest.skip(f"{BASE} exists: another run is using it")
    root = BASE / "proj"
    (root / ".tectum").mkdir(parents=True)
    shutil.copy(DATA / "stack.py", root / "stack.py")
    shutil.copy(DATA / "plan.tfplan", root / "plan.tfplan")
    shutil.copy(DATA / "state.db", root / ".tectum" / "state.db")
    WORLD.mkdir(mode=0o755)  # (as the first apply left it)
    os.chmod(WORLD, 0o755)
    (WORLD / "hello.txt").write_text("v1\n")
    os.chmod(WORLD / "hello.txt", 0o644)
    try:
        yield root
    finally:
        shutil.rmtree(BASE, ignore_errors=True)


def test_old_state_plans_no_change_and_upgrades(
        old_project: Path, tectum: Callable[..., Result]) -> None:
    listed = tectum("state", "list", cwd=old_project)
    assert listed.returncode == 0, listed.output
    assert listed.stdout.split() == ["directory.d", "file.hello"]
    plan = tectum("plan", "--detailed-exitcode", "-var", "text=v1\n", cwd=old_project)
    assert plan.returncode == 0, plan.output  # nothing to do: the upgrade invents no change
    pulled = json.loads(tectum("state", "pull", cwd=old_project).stdout)
    assert pulled["format_version"] == FORMAT_VERSION
    assert pulled["serial"] == 1
    assert {r["address"]: r["attributes"]["path"] for r in pulled["resources"]} == {
        "directory.d": str(WORLD), "file.hello": f"{WORLD}/hello.txt"}


def test_plan_saved_by_the_old_release_applies(
        old_project: Path, tectum: Callable[..., Result]) -> None:
    res = tectum("apply", "plan.tfplan", cwd=old_project)
    assert res.returncode == 0, res.output
    assert "1 changed" in res.stdout
    assert (WORLD / "hello.txt").read_text() == "v2\n"
    again = tectum("plan", "--detailed-exitcode", "-var", "text=v2\n", cwd=old_project)
    assert again.returncode == 0, again.output
    history = tectum("state", "history", cwd=old_project)
    assert history.returncode == 0 and "apply" in history.stdout, history.output


def test_state_from_a_newer_provider_is_refused_at_plan(
        tmp_path: Path, tectum: Callable[..., Result]) -> None:
    """A record whose type's schema version is newer than the installed provider's is not
    guessed at: plan refuses it, naming the resource and what to do (OpenTofu's rule)."""
    root = tmp_path / "proj"
    world = tmp_path / "world"
    root.mkdir()
    world.mkdir()
    (root / "stack.py").write_text(
        f'from tectum.host import File\nFile("f", path="{world}/f", content="x\\n")\n')
    assert tectum("apply", "--auto-approve", cwd=root).returncode == 0
    doc = json.loads(tectum("state", "pull", cwd=root).stdout)
    doc["resources"][0]["schema_version"] = 7
    doc["serial"] += 1
    (tmp_path / "s.json").write_text(json.dumps(doc))
    pushed = tectum("state", "push", str(tmp_path / "s.json"), cwd=root)
    assert pushed.returncode == 0, pushed.output
    res = tectum("plan", cwd=root)
    assert res.returncode == 1, res.output
    assert "Resource state from a newer provider" in res.stderr
    assert "file.f" in res.stderr and "Traceback" not in res.output
