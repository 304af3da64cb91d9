"""Fixtures of the aws provider's tests: ``moto_faults``, the per-test moto server behind a
fault-injection proxy (``tests.harness.fault_proxy``) that injects nothing until a test sets
its :attr:`~tests.harness.fault_proxy.FaultProxy.faults`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.fault_proxy import FaultProxy, fault_proxy
from tests.harness.moto import Moto


@pytest.fixture
def moto_faults(moto: Moto) -> Iterator[FaultProxy]:
    with fault_proxy(moto.url) as proxy:
        yield proxy
