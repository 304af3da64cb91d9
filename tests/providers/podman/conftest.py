"""A podman storage of its own for the podman tests (one per session), with the test base
image imported (``tests/harness/images.py``). Tests name what they make with a random suffix
and remove it."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest

from tests.harness.images import PodmanStore


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/providers/podman/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.podman)


@pytest.fixture(scope="session")
def store() -> Iterator[PodmanStore]:
    if os.geteuid() != 0:
        pytest.skip("the podman tests run podman as root")
    with PodmanStore() as made:
        made.import_base()
        yield made


@pytest.fixture
def suffix() -> str:
    return secrets.token_hex(3)
