"""Conformance case of ``podman_volume``: a volume in a podman storage of the case's own (a
temporary ``--root``/``--runroot``, ``tests.harness.images.PodmanStore``), removed afterwards.
Every setting of a volume forces a new one, so the update step is a replace."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tectum.plans.plan import Action
from tectum.providers.podman.client import Podman
from tectum.testing import Case
from tectum.testing.recording import Recorder
from tests.harness.images import PodmanStore

#: the Podman client's methods that only read (``run`` says itself with ``mutating``)
READS = frozenset({"inspect", "json", "argv", "global_args", "ulimit_args", "failure"})


def _run_mutates(name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bool | None:
    return bool(kwargs.get("mutating", True)) if name == "run" else None


def record(target: Podman) -> Recorder:
    return Recorder(target, read_only=READS, mutating_call=_run_mutates)


@contextmanager
def volume_case(tmp: Path) -> Iterator[Case]:
    store = PodmanStore()
    name = f"tectum-conf-{secrets.token_hex(4)}"

    def tamper(target: Podman, _record: dict[str, Any]) -> None:
        # made anew by hand with another label: podman cannot change a volume's labels
        target.run(["volume", "rm", "--", name])
        target.run(["volume", "create", "--label", "app=by-hand", "--", name])

    try:
        yield Case("podman_volume", {"name": name, "labels": {"app": "one"}},
                   update={"labels": {"app": "two"}}, update_action=Action.REPLACE,
                   tamper=tamper, drift="labels", import_id=name, root=str(tmp),
                   settings=store.settings, record=record)
    finally:
        # (not store.close(): its `podman system reset` empties /run/libpod, which every
        # podman storage on this machine shares)
        store.podman.run(["volume", "rm", "-f", "--", name], check=False)
        subprocess.run(["umount", "-R", "-l", str(store.dir)], capture_output=True)
        shutil.rmtree(store.dir, ignore_errors=True)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the podman tests run podman as root")
BUILDERS = {"podman_volume": volume_case}
MARKS = {"podman_volume": [pytest.mark.podman, needs_root]}
