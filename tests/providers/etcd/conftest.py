"""The etcd provider's tests run against a real etcd (``tests.harness.etcd``): one server per
test session, and a key prefix of each test's own."""

from __future__ import annotations

import os

import pytest

from tests.harness.etcd import etcd, etcd_server  # noqa: F401


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here needs etcd (README's ``etcd`` marker)."""
    for item in items:
        if "tests/providers/etcd/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.etcd)
