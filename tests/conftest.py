"""Shared fixtures: run the real ``tectum`` CLI in a subprocess on a project directory."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_tectum(*args: str, cwd: str | Path | None = None, input: str | None = None,
               env: dict[str, str] | None = None, timeout: float = 600) -> Result:
    """Run ``python -m tectum ARGS`` (the installed package) and capture its output."""
    full_env = dict(os.environ)
    full_env["NO_COLOR"] = "1"
    if env:
        full_env.update(env)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "tectum", *args], cwd=cwd, input=input, capture_output=True,
            text=True, env=full_env, timeout=timeout,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:  # say where it stood, not only that it hung
        hung = (f"tectum {' '.join(args)} ran past {timeout:g} s; it had printed:\n"
                f"{_text(exc.stdout)[-6000:]}\n--- stderr ---\n{_text(exc.stderr)[-3000:]}")
    else:
        return Result(proc.returncode, proc.stdout, proc.stderr)
    pytest.fail(hung, pytrace=False)


def _text(data: str | bytes | None) -> str:
    """TimeoutExpired carries bytes even under text=True."""
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data or ""


@pytest.fixture
def tectum() -> Callable[..., Result]:
    return run_tectum


@pytest.fixture
def make_project(tmp_path: Path) -> Callable[..., Path]:
    """Write ``stack.py`` (dedented) and any extra files into a fresh project directory."""

    def make(stack: str, files: dict[str, str] | None = None, name: str = "proj") -> Path:
        root = tmp_path / name
        root.mkdir(exist_ok=True)
        (root / "stack.py").write_text(textwrap.dedent(stack))
        for rel, text in (files or {}).items():
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(textwrap.dedent(text))
        return root

    return make


# PostgreSQL for any test that needs it (a private cluster, started once per session)
from tests.backends.conftest import pg_dsn, postgres_dsn  # noqa: E402, F401
