"""``[state] backend = NAME`` picks a backend from the ``tectum.backends`` entry points; a name
no installed package provides is a diagnostic naming the ones there are."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tectum.backends.factory import backend_names
from tests.conftest import Result


def test_builtin_backends_are_registered() -> None:
    assert {"sqlite", "postgres"} <= set(backend_names())


def test_unknown_backend_is_a_diagnostic(tmp_path: Path, tectum: Callable[..., Result]) -> None:
    (tmp_path / "stack.py").write_text("")
    (tmp_path / "tectum.toml").write_text('[state]\nbackend = "floppy"\n')
    res = tectum("plan", cwd=tmp_path)
    assert res.returncode == 1, res.output
    assert "Unsupported state backend" in res.stderr
    assert "'floppy'" in res.stderr and "'sqlite'" in res.stderr and "'postgres'" in res.stderr
    assert "Traceback" not in res.output
    assert not (tmp_path / ".tectum" / "state.db").exists()
