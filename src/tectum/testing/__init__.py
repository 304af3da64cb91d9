"""Testing providers: the conformance suite every resource type passes, and its doubles.

* :class:`Case`, :func:`check_resource_type`, :func:`check_engine`,
  :class:`ResourceTypeSuite` — the resource type conformance suite
  (:mod:`tectum.testing.conformance`): create → the plan is a no-op → a no-op apply makes no
  mutating call → update → a hand-made change is seen as drift → import round-trips → the
  journal identity finds the object → delete → a read finds nothing.
* :class:`MockProvider` (provider ``mock``, type ``mock_key`` with a server-assigned ``id``)
  and its in-memory :class:`MockStore`, which records every call
  (:mod:`tectum.testing.mock`).
* :class:`FakeConnector` (a recording proxy around a host connector) and :class:`Recorder`
  (the same for any target) (:mod:`tectum.testing.recording`).
* :func:`registered` (add provider classes to the registry for a ``with`` block, without an
  entry point) and :func:`fresh_registry` (look for entry points again)
  (:mod:`tectum.testing.registration`).

``docs/providers.md`` shows how a provider's own tests use them.
"""

from tectum.testing.conformance import (
    STEPS,
    Case,
    ConformanceError,
    Report,
    ResourceTypeSuite,
    check_engine,
    check_resource_type,
)
from tectum.testing.mock import (
    MockError,
    MockKeyType,
    MockProvider,
    MockStore,
    mock_store,
    reset_mock_stores,
)
from tectum.testing.recording import Call, FakeConnector, Recorder, Recording, recording
from tectum.testing.registration import fresh_registry, registered

__all__ = [
    "STEPS",
    "Call",
    "Case",
    "ConformanceError",
    "FakeConnector",
    "MockError",
    "MockKeyType",
    "MockProvider",
    "MockStore",
    "Recorder",
    "Recording",
    "Report",
    "ResourceTypeSuite",
    "check_engine",
    "check_resource_type",
    "fresh_registry",
    "mock_store",
    "recording",
    "registered",
    "reset_mock_stores",
]
