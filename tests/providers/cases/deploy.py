"""Conformance cases of the deploy steps: ``git_checkout`` (a real repository made in
``tmp_path``) and ``pip_packages`` (a real virtualenv, with wheels built in the test and
installed offline: ``--no-index --find-links``)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from tectum.testing import Case
from tests.providers.host.test_git import commit, git, make_repo
from tests.providers.host.test_pip import PROBE, make_wheel, pip

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


@contextmanager
def git_case(tmp: Path) -> Iterator[Case]:
    src = make_repo(tmp / "src")
    commit(src, "two")
    dest = str(tmp / "checkout")

    def tamper(_target: Any, _record: dict[str, Any]) -> None:
        # someone points the checkout at another remote (a mirror) by hand
        git(dest, "remote", "set-url", "origin", f"file://{src}")

    yield Case("git_checkout", {"repo": str(src), "dest": dest, "version": "main"},
               update={"version": "v1"}, tamper=tamper, drift="repo", import_id=dest,
               root=str(tmp))


def uninstall(venv: str) -> None:
    """The probe package removed by hand."""
    pip(venv, "uninstall", "-y", PROBE)


@contextmanager
def pip_case(tmp: Path) -> Iterator[Case]:
    wheels = tmp / "wheels"
    wheels.mkdir()
    make_wheel(wheels, PROBE, "1.0")
    make_wheel(wheels, PROBE, "2.0")
    venv = str(tmp / "venv")
    yield Case("pip_packages", {"virtualenv": venv, "packages": [f"{PROBE}==1.0"],
                                "find_links": [str(wheels)], "extra_args": ["--no-index"]},
               update={"packages": [f"{PROBE}==2.0"]},
               tamper=lambda _t, _r: uninstall(venv), drift="packages",
               root=str(tmp),
               skip={"import": "which packages of a virtualenv a resource manages is "
                               "configuration: an import by path cannot tell them from the "
                               "others in it"})


BUILDERS: dict[str, Callable[[Path], AbstractContextManager[Case]]] = {
    "git_checkout": git_case,
    "pip_packages": pip_case,
}

MARKS: dict[str, list[pytest.MarkDecorator]] = {
    "git_checkout": [needs_git],
}
