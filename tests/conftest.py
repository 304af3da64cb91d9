"""Shared fixtures: run the real ``tectum`` CLI in a subprocess on a project directory."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Callable, Iterator
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


def ok(result: Result) -> Result:
    """``result``, after asserting that tectum exited 0 (its output is the message)."""
    assert result.returncode == 0, result.output
    return result


#: what tectum inherits from the test process: what finds programs and Python, the locale and
#: the temporary directory. Nothing else — no ``TECTUM_*`` setting, no HOME (and so no key
#: under ``~/.config`` or ``~/.ssh``), no ``XDG_*`` — leaks from whoever runs the tests.
KEPT_ENV = ("PATH", "LANG", "LANGUAGE", "TZ", "TMPDIR", "VIRTUAL_ENV")
KEPT_ENV_PREFIXES = ("LC_", "PYTHON")

_homes: list[Path] = []  # the current test's HOME for tectum, made on first use
_homes_lock = threading.Lock()


def tectum_home() -> Path:
    """An empty home directory of the running test's own, for the tectum it runs (removed
    after the test by :func:`_clean_tectum_home`)."""
    with _homes_lock:
        if not _homes:
            _homes.append(Path(tempfile.mkdtemp(prefix="tectum-home-")))
        return _homes[0]


def _remove_tectum_homes() -> None:
    with _homes_lock:
        while _homes:
            shutil.rmtree(_homes.pop(), ignore_errors=True)


@pytest.fixture(autouse=True)
def _clean_tectum_home() -> Iterator[None]:
    yield
    _remove_tectum_homes()


atexit.register(_remove_tectum_homes)  # one made by a module or session fixture's teardown


def tectum_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment tectum runs in: :data:`KEPT_ENV` (and ``LC_*``, ``PYTHON*`` —
    ``PYTHONPATH`` runs a mutated copy of the source), ``HOME`` = :func:`tectum_home`,
    ``NO_COLOR=1``, then ``env``: a test that needs a variable passes it."""
    full_env = {k: v for k, v in os.environ.items()
                if k in KEPT_ENV or k.startswith(KEPT_ENV_PREFIXES)}
    full_env["HOME"] = str(tectum_home())
    full_env["NO_COLOR"] = "1"
    full_env.update(env or {})
    return full_env


def run_tectum(*args: str, cwd: str | Path | None = None, input: str | None = None,
               env: dict[str, str] | None = None, timeout: float = 600) -> Result:
    """Run ``python -m tectum ARGS`` (the installed package) in a clean environment
    (:func:`tectum_env`: pass what a test needs in ``env``) and capture its output."""
    full_env = tectum_env(env)
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
from tests.harness.moto import moto, moto_server  # noqa: E402, F401

#: fixtures whose tests change this machine outside temporary directories (marker ``system``)
SYSTEM_FIXTURES = frozenset({"accounts"})


#: markers of tests that change this machine (packages, services, users, namespaces, the
#: test fleet, podman's networks): under pytest-xdist (``-n 2 --dist loadgroup``) the files
#: holding any such test run one test at a time, on one worker, in the group below. (Not yet
#: what README's test command does: a whole run so took 24.5 min here against 38 serially, but
#: two tests failed under it — a package test found its package removed, and moto answered
#: HTTP 500 in a kill trial — and those are to be understood first.)
MACHINE_MARKERS = frozenset({"fleet", "apt", "system", "podman"})
MACHINE_GROUP = "machine"


@pytest.hookimpl(tryfirst=True)  # (before xdist's worker reads the groups)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use a fixture of :data:`SYSTEM_FIXTURES` get the ``system`` marker, so that
    ``-m "not system"`` leaves them out (README lists the markers). Every test of a file that
    holds a test marked with one of :data:`MACHINE_MARKERS` joins the xdist group
    :data:`MACHINE_GROUP` (module fixtures are shared within a file: a whole file stays on one
    worker); the other tests, which touch only temporary directories and servers of their
    own on free ports, run on any worker."""
    machine_files: set[str] = set()
    for item in items:
        if SYSTEM_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.system)
        if any(item.get_closest_marker(m) for m in MACHINE_MARKERS):
            machine_files.add(item.nodeid.split("::", 1)[0])
    for item in items:
        if item.nodeid.split("::", 1)[0] in machine_files:
            item.add_marker(pytest.mark.xdist_group(MACHINE_GROUP))
