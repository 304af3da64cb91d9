"""Conformance case of ``podman_container``: a container of the test base image in a podman
storage of the case's own (a temporary ``--root``/``--runroot``,
``tests.harness.images.PodmanStore``), removed afterwards. The update stops it (``running`` is
the one attribute changed in place); the change by hand starts it again. The image is named by
its id, as a ``podman_image``'s ``image_id`` names it (a read that knows only the name — the
journal's identity, an import — reports the container's image id)."""

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

from tectum.providers.podman.client import Podman
from tectum.providers.podman.container import TEMP_SUFFIX
from tectum.testing import Case
from tectum.testing.recording import Recorder
from tests.harness.images import PodmanStore

#: the Podman client's methods that only read (``run`` says itself with ``mutating``)
READS = frozenset({"inspect", "json", "argv", "global_args", "ulimit_args", "failure"})
#: runs until stopped, and stops at once on SIGTERM
LOOP = ["sh", "-c", "trap 'exit 0' TERM; sleep infinity & wait"]


def _run_mutates(name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bool | None:
    return bool(kwargs.get("mutating", True)) if name == "run" else None


def record(target: Podman) -> Recorder:
    return Recorder(target, read_only=READS, mutating_call=_run_mutates)


@contextmanager
def container_case(tmp: Path) -> Iterator[Case]:
    store = PodmanStore()
    name = f"tectum-conf-{secrets.token_hex(4)}"
    try:
        base = store.import_base()
        image_id = store.podman.run(["image", "inspect", "--format", "{{.Id}}", base],
                                    mutating=False).stdout.decode().strip()

        def tamper(target: Podman, _record: dict[str, Any]) -> None:
            target.run(["start", name])  # started by hand while it should be stopped

        yield Case("podman_container",
                   {"name": name, "image": image_id, "command": LOOP, "network": "none",
                    "env": {"MODE": "conformance"}, "labels": {"app": "conf"}},
                   update={"running": False}, tamper=tamper, drift="running",
                   import_id=name, root=str(tmp), settings=store.settings, record=record)
    finally:
        # (not store.close(): its `podman system reset` empties /run/libpod, which every
        # podman storage on this machine shares)
        store.podman.run(["rm", "-f", "-i", "-t", "0", name, name + TEMP_SUFFIX], check=False)
        store.podman.run(["rmi", "-f", "-a"], check=False)
        subprocess.run(["umount", "-R", "-l", str(store.dir)], capture_output=True)
        shutil.rmtree(store.dir, ignore_errors=True)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the podman tests run podman as root")
BUILDERS = {"podman_container": container_case}
MARKS = {"podman_container": [pytest.mark.podman, needs_root]}
