"""The naming rule for resource types (issue 11 item 3): a type's name starts with its
provider's name and ``_`` (OpenTofu's rule); only the built-in ``host`` provider keeps short
names (``file``, ``package``), so stacks and states written before providers existed stay
valid. The registry refuses a provider that breaks the rule, offers a type another provider
offers, or cannot be imported — with a diagnostic, never a traceback."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tectum.plans.plan import ResourceChange
from tectum.providers.base import Provider, ProviderError, ReadItem, ResourceType
from tectum.providers.registry import registry
from tectum.schema import Attr, Schema
from tectum.testing import fresh_registry, registered


class WidgetType(ResourceType[None]):
    name = "acme_widget"
    schema = Schema({"name": Attr(str, required=True, identity=True)})

    def read(self, target: None, items: Sequence[ReadItem]) -> list[dict[str, Any] | None]:
        return [None for _ in items]

    def apply(self, target: None, change: ResourceChange) -> dict[str, Any] | None:
        return change.after


class Acme(Provider):
    name = "acme"
    resource_types: ClassVar[dict[str, str]] = {
        "acme_widget": f"{__name__}:WidgetType"}

    def target(self, host: str | None) -> None:
        return None


def test_host_types_keep_short_names_and_others_carry_their_provider() -> None:
    for type_name in registry.names():
        provider = registry.provider_of(type_name)
        assert provider is not None
        if provider == "host":
            # a short name never looks like another provider's (random_password)
            others = [p for p in registry.providers() if p != "host"]
            assert not any(type_name.startswith(p + "_") for p in others), type_name
        else:
            assert type_name.startswith(provider + "_"), type_name
    assert registry.provider_of("file") == "host"
    assert registry.provider_of("random_password") == "random"


def test_a_prefixed_type_registers() -> None:
    with registered(Acme):
        assert registry.provider_of("acme_widget") == "acme"
        rt = registry.get("acme_widget")
        assert isinstance(rt, WidgetType)
    assert registry.get("acme_widget") is None


def test_an_unprefixed_type_is_refused() -> None:
    class Bad(Acme):
        name = "bad"
        resource_types: ClassVar[dict[str, str]] = {"widget": f"{__name__}:WidgetType"}

    with pytest.raises(ProviderError) as err, registered(Bad):
        pass
    d = list(err.value.diagnostics)[0]
    assert d.summary == "Invalid resource type name"
    assert "'widget'" in d.detail and "bad_" in d.detail
    assert registry.provider_of("widget") is None


def test_a_type_offered_twice_is_refused() -> None:
    class Thief(Acme):
        name = "thief"
        short_names = True  # (even a provider allowed short names may not take another's)
        resource_types: ClassVar[dict[str, str]] = {"file": f"{__name__}:WidgetType"}

    with pytest.raises(ProviderError) as err, registered(Thief):
        pass
    assert list(err.value.diagnostics)[0].summary == "Resource type offered twice"
    assert registry.provider_of("file") == "host"


def test_a_plug_in_that_cannot_be_imported_is_a_diagnostic(tmp_path: Path) -> None:
    info = tmp_path / "broken_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[tectum.providers]\nbroken = no_such_module_here:Provider\n")
    sys.path.insert(0, str(tmp_path))
    try:
        with fresh_registry(), pytest.raises(ProviderError) as err:
            registry.names()
    finally:
        sys.path.remove(str(tmp_path))
    d = list(err.value.diagnostics)[0]
    assert d.summary == "Provider cannot be loaded"
    assert "no_such_module_here" in d.detail and "broken" in d.detail
    assert registry.provider_of("file") == "host"
