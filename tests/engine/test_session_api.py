"""The Python API the CLI calls (``tectum.engine.session.Session``), used directly."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tectum.engine.session import Session
from tectum.plans.plan import Action
from tests.conftest import Result


def test_destroy_plan_of_a_declared_stack_lists_each_object_once(
        tmp_path: Path, tectum: Callable[..., Result]) -> None:
    world = tmp_path / "world"
    world.mkdir()
    (tmp_path / "stack.py").write_text(
        "from tectum.host import Directory, File\n"
        f'd = Directory("d", path="{world}/d")\n'
        'File("f", path=f"{d.path}/f", content="x\\n")\n')
    assert tectum("apply", "--auto-approve", cwd=tmp_path).returncode == 0
    session = Session(str(tmp_path))
    try:
        stack = session.evaluate()
        state = session.read_state()
        plan = session.plan(stack, state, destroy=True).plan
    finally:
        session.close()
    addresses = [c.address for c in plan.changes]
    assert sorted(addresses) == ["directory.d", "file.f"]
    by_address = {c.address: c for c in plan.changes}
    assert "file.f" in by_address["directory.d"].dependencies  # (deleted before it)
    assert all(c.action is Action.DELETE for c in plan.changes)


def test_validate_and_graph(tmp_path: Path) -> None:
    (tmp_path / "stack.py").write_text(
        "from tectum.host import Directory, File\n"
        'd = Directory("d", path="/tmp/tectum-api-test")\n'
        'File("f", path=f"{d.path}/f", content="x\\n")\n')
    session = Session(str(tmp_path))
    try:
        stack = session.evaluate()
        assert not session.validate(stack).has_errors
        graph, diags = session.graph(stack)
        assert not diags.has_errors
        assert graph.deps["file.f"] == {"directory.d"}
    finally:
        session.close()
    assert not Path("/tmp/tectum-api-test").exists()
