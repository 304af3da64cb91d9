"""Conformance case of ``podman_image``: an image built from the test base (imported into a
podman storage of the case's own, ``tests.harness.images.PodmanStore``), removed afterwards.
A label change makes another version (an update: a new tag); the hand-made change is the image
deleted, which the plan rebuilds."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tectum.plans.plan import Action
from tectum.providers.podman.client import Podman
from tectum.testing import Case
from tests.harness.images import PodmanStore
from tests.providers.cases.podman_volume import record


@contextmanager
def image_case(tmp: Path) -> Iterator[Case]:
    store = PodmanStore()
    base = store.import_base()
    name = f"localhost/tectum-conf-{secrets.token_hex(4)}"

    def tamper(target: Podman, rec: dict[str, Any]) -> None:
        target.run(["rmi", f"{name}:{rec['tag']}", f"{name}:latest"])

    try:
        yield Case("podman_image", {"name": name, "base": base, "labels": {"v": "1"}},
                   update={"labels": {"v": "2"}}, update_action=Action.UPDATE,
                   tamper=tamper, drift=None,
                   import_id=lambda rec: f"{rec['name']}:{rec['tag']}", root=str(tmp),
                   settings=store.settings, record=record)
    finally:
        store.close()


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the podman tests run podman as root")
BUILDERS = {"podman_image": image_case}
MARKS = {"podman_image": [pytest.mark.podman, needs_root]}
