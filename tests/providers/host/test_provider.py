"""The ``host`` provider: its registration, settings, targets (one connector per host, made
on first use, kept, closed) and the batched fact fetch around a host's reads.

No host is contacted: an SSH connector connects on first use, and these tests never use one.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from tectum.config.inventory import Inventory, load_inventory
from tectum.diagnostics import DiagnosticError
from tectum.providers.base import (
    ProviderContext,
    ProviderError,
    ReadItem,
    Registry,
    provider_settings,
)
from tectum.providers.host.apt import PackageType
from tectum.providers.host.connector import FactRequest, LocalConnector
from tectum.providers.host.files import DirectoryType, FileType
from tectum.providers.host.provider import HostProvider
from tectum.providers.host.ssh import SSHConnector
from tectum.providers.random.password import PasswordType
from tectum.providers.random.provider import NO_TARGET, RandomProvider

INVENTORY = """\
[hosts.web-1]
address = "192.0.2.10"
port = 2222
user = "deploy"
become = true
connect_timeout = 3
command_timeout = 40

[hosts.web-2]
address = "192.0.2.11"
become = true
become_password_env = "TECTUM_TEST_HOST_PROVIDER_PASSWORD"

[hosts.controller]
connector = "local"
"""


@pytest.fixture
def inventory(tmp_path: Path) -> Inventory:
    (tmp_path / "inventory.toml").write_text(INVENTORY)
    return load_inventory(str(tmp_path))


def configured(inventory: Inventory, table: dict[str, Any] | None = None,
               **options: Any) -> HostProvider:
    provider = HostProvider()
    config = provider_settings("host", HostProvider, table or {}, "tectum.toml")
    provider.configure(config, ProviderContext(str(Path(inventory.path).parent), "default",
                                               inventory, options))
    return provider


# -- registration ----------------------------------------------------------------------------

def test_entry_points_register_both_providers() -> None:
    from importlib.metadata import entry_points

    found = {ep.name: ep.value for ep in entry_points(group="tectum.providers")}
    assert found["host"] == "tectum.providers.host.provider:HostProvider"
    assert found["random"] == "tectum.providers.random.provider:RandomProvider"


def test_registry_finds_the_types() -> None:
    reg = Registry()
    assert reg.providers()["host"] is HostProvider
    assert reg.providers()["random"] is RandomProvider
    for name in ("file", "directory", "symlink", "package", "user", "group", "service",
                 "command"):
        assert reg.provider_of(name) == "host"
        rt = reg.get(name)
        assert rt is not None and rt.name == name
    assert reg.provider_of("random_password") == "random"
    assert isinstance(reg.get("random_password"), PasswordType)


# -- settings --------------------------------------------------------------------------------

def test_default_settings(inventory: Inventory,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TECTUM_PROVIDER_HOST_CONCURRENCY", raising=False)
    monkeypatch.delenv("TECTUM_PROVIDER_HOST_ACCEPT_NEW_HOST_KEYS", raising=False)
    provider = configured(inventory)
    assert provider.config == {"accept_new_host_keys": False, "concurrency": 10}
    assert provider.concurrency(provider.target(None)) == 10


def test_concurrency_from_table(inventory: Inventory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TECTUM_PROVIDER_HOST_CONCURRENCY", raising=False)
    provider = configured(inventory, {"concurrency": 4})
    assert provider.concurrency(provider.target("web-1")) == 4


def test_environment_overrides_concurrency(inventory: Inventory,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TECTUM_PROVIDER_HOST_CONCURRENCY", "3")
    provider = configured(inventory, {"concurrency": 20})
    assert provider.config["concurrency"] == 3
    assert provider.concurrency(provider.target(None)) == 3


@pytest.mark.parametrize(("table", "env", "says"), [
    ({"concurrency": 0}, None, "[providers.host] concurrency: must be 1 to 1000"),
    ({"concurrency": 1001}, None, "[providers.host] concurrency: must be 1 to 1000"),
    ({"concurrency": "many"}, None, "[providers.host] concurrency: expected"),
    ({}, "lots", "environment variable TECTUM_PROVIDER_HOST_CONCURRENCY: expected"),
    ({"forks": 3}, None, "unknown setting 'forks' (settings of this provider: "
                         "accept_new_host_keys, concurrency)"),
    ({"accept_new_host_keys": "yes"}, None, "[providers.host] accept_new_host_keys: expected"),
])
def test_bad_setting(table: dict[str, Any], env: str | None, says: str,
                     monkeypatch: pytest.MonkeyPatch) -> None:
    if env is None:
        monkeypatch.delenv("TECTUM_PROVIDER_HOST_CONCURRENCY", raising=False)
    else:
        monkeypatch.setenv("TECTUM_PROVIDER_HOST_CONCURRENCY", env)
    with pytest.raises(ProviderError) as caught:
        provider_settings("host", HostProvider, table, "/p/tectum.toml")
    diag = next(iter(caught.value.diagnostics))
    assert diag.summary == "Invalid provider settings"
    assert diag.detail.startswith("Provider 'host': ")
    assert says in diag.detail
    assert diag.address == "providers.host"
    assert diag.source is not None and diag.source.filename == "/p/tectum.toml"


def test_accept_new_host_keys_from_env(inventory: Inventory,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TECTUM_PROVIDER_HOST_ACCEPT_NEW_HOST_KEYS", "true")
    provider = configured(inventory)
    conn = provider.target("web-1")
    assert isinstance(conn, SSHConnector) and conn.trust_unknown is True


# -- targets ---------------------------------------------------------------------------------

def test_local_target_is_shared(inventory: Inventory) -> None:
    provider = configured(inventory)
    assert provider.made(None) is None
    local = provider.target(None)
    assert isinstance(local, LocalConnector) and local.host == "local"
    assert provider.target("local") is local
    assert provider.target(None) is local
    assert provider.made(None) is local and provider.made("local") is local


def test_inventory_host_with_local_connector(inventory: Inventory) -> None:
    provider = configured(inventory)
    conn = provider.target("controller")
    assert isinstance(conn, LocalConnector)
    assert conn.host == "controller"  # (the command log names it)
    assert conn is not provider.target(None)
    assert provider.target("controller") is conn


def test_ssh_target(inventory: Inventory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TECTUM_PROVIDER_HOST_ACCEPT_NEW_HOST_KEYS", raising=False)
    provider = configured(inventory)
    assert provider.made("web-1") is None
    conn = provider.target("web-1")
    assert isinstance(conn, SSHConnector)
    assert (conn.host, conn.address, conn.port, conn.user, conn.become) == (
        "web-1", "192.0.2.10", 2222, "deploy", True)
    assert (conn.connect_timeout, conn.command_timeout) == (3, 40)
    assert conn.trust_unknown is False
    assert conn.fail_fast is True
    assert conn.round_trips == 0 and conn.connects == 0  # nothing contacted yet
    assert provider.target("web-1") is conn
    assert provider.made("web-1") is conn
    assert provider.down(conn) is None
    conn.down = ("unreachable", "no route to host")
    assert provider.down(conn) == ("unreachable", "no route to host")


@pytest.mark.parametrize(("table", "options"), [
    ({"accept_new_host_keys": True}, {}),
    ({}, {"accept_new_host_keys": True}),
])
def test_accept_new_host_keys(inventory: Inventory, monkeypatch: pytest.MonkeyPatch,
                              table: dict[str, Any], options: dict[str, Any]) -> None:
    """``[providers.host] accept_new_host_keys`` or the session's --accept-new-host-keys."""
    monkeypatch.delenv("TECTUM_PROVIDER_HOST_ACCEPT_NEW_HOST_KEYS", raising=False)
    conn = configured(inventory, table, **options).target("web-1")
    assert isinstance(conn, SSHConnector) and conn.trust_unknown is True


def test_become_password_from_env(inventory: Inventory,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TECTUM_TEST_HOST_PROVIDER_PASSWORD", "s3cret")
    conn = configured(inventory).target("web-2")
    assert isinstance(conn, SSHConnector) and conn._become_password == "s3cret"


def test_become_password_not_set(inventory: Inventory,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TECTUM_TEST_HOST_PROVIDER_PASSWORD", raising=False)
    provider = configured(inventory)
    with pytest.raises(DiagnosticError) as caught:
        provider.target("web-2")
    diag = next(iter(caught.value.diagnostics))
    assert diag.summary == "Become password not set"
    assert diag.detail == (
        "Host 'web-2' takes its sudo password from the environment variable "
        "TECTUM_TEST_HOST_PROVIDER_PASSWORD, which is not set. Export it (from a secret "
        "store), or use passwordless sudo.")
    assert diag.address == 'host["web-2"]'
    assert diag.source is not None and diag.source.filename == inventory.path
    assert provider.made("web-2") is None  # nothing cached: a later call tries again


def test_unknown_host(inventory: Inventory) -> None:
    provider = configured(inventory)
    with pytest.raises(DiagnosticError) as caught:
        provider.target("db-9")
    diag = next(iter(caught.value.diagnostics))
    assert diag.summary == "Unknown host"
    assert diag.detail == (
        f"Host 'db-9' is not in the inventory ({inventory.path}). Add [hosts.db-9] to it, or "
        "remove its resources from state with `tectum state rm`.")
    assert diag.address == 'host["db-9"]'
    assert provider.made("db-9") is None


def test_one_target_per_host_across_threads(inventory: Inventory) -> None:
    provider = configured(inventory)
    got: list[Any] = []
    start = threading.Barrier(8)

    def grab() -> None:
        start.wait()
        got.append((provider.target("web-1"), provider.target(None)))

    threads = [threading.Thread(target=grab) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(ssh) for ssh, _ in got}) == 1
    assert len({id(local) for _, local in got}) == 1


def test_close_closes_every_target(inventory: Inventory, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "commands.jsonl"
    monkeypatch.setenv("TECTUM_COMMAND_LOG", str(log))
    provider = configured(inventory)
    local = provider.target(None)
    controller = provider.target("controller")
    ssh = provider.target("web-1")
    local.run(["true"], mutating=False)
    controller.run(["true"], mutating=False)
    provider.close()
    assert provider.made(None) is None
    assert provider.made("controller") is None
    assert provider.made("web-1") is None
    hosts = sorted(line.split('"host": ')[1].split(",")[0] for line in
                   log.read_text().splitlines())
    assert hosts == ['"controller"', '"local"']  # both command logs flushed
    assert isinstance(ssh, SSHConnector)
    assert provider.target(None) is not local  # a new session's worth after close


def test_unconfigured_provider_has_local_only() -> None:
    provider = HostProvider()
    assert isinstance(provider.target(None), LocalConnector)
    with pytest.raises(RuntimeError):
        provider.target("web-1")


@pytest.mark.parametrize(("host", "key"), [
    (None, None), ("local", None), ("controller", None), ("web-1", "web-1"),
    ("not-in-inventory", "not-in-inventory"),
])
def test_target_key(inventory: Inventory, host: str | None, key: str | None) -> None:
    """Every name of this machine is one target: automatic dependencies and the check that no
    object is managed twice match across them."""
    assert HostProvider.target_key(host, inventory) == key


# -- reads -----------------------------------------------------------------------------------

class FactRecorder:
    host = "rec"

    def __init__(self) -> None:
        self.calls: list[Any] = []

    def prefetch(self, request: FactRequest) -> None:
        self.calls.append(("prefetch", request))

    def forget_facts(self) -> None:
        self.calls.append(("forget", None))


def test_begin_read_fetches_every_fact_at_once() -> None:
    conn = FactRecorder()
    provider = HostProvider()
    batches: Sequence[tuple[Any, Sequence[ReadItem]]] = [
        (FileType(), [ReadItem({"path": "/srv/a", "content": "x"}, None),
                      ReadItem(None, {"path": "/srv/b"})]),
        (DirectoryType(), [ReadItem({"path": "/srv"}, {"path": "/old"})]),
        (PackageType(), [ReadItem({"name": "tree"}, None)]),
        (PasswordType(), [ReadItem({"length": 8}, None)]),  # not a host type: no facts
    ]
    provider.begin_read(conn, batches)
    assert len(conn.calls) == 1
    kind, request = conn.calls[0]
    assert kind == "prefetch"
    assert request.content == ("/srv/a", "/srv/b")
    assert request.paths == ("/srv",)
    # the package's dpkg-query, and (a package about to be installed) apt's policy of it
    # for the plan-time check (HostType.plan_facts), in the same round trip
    item = ReadItem({"name": "tree"}, None)
    assert request.commands == (*PackageType().facts([{"name": "tree"}]).commands,
                                *PackageType().plan_facts([item]).commands)
    provider.end_read(conn)
    assert conn.calls[-1] == ("forget", None)


# -- random ----------------------------------------------------------------------------------

def test_random_provider(inventory: Inventory) -> None:
    provider = RandomProvider()
    provider.configure(provider_settings("random", RandomProvider, {}, "tectum.toml"),
                       ProviderContext("/p", "default", inventory, {}))
    assert provider.target(None) is NO_TARGET
    assert provider.target("web-1") is NO_TARGET
    assert provider.made("web-1") is NO_TARGET
    assert provider.down(NO_TARGET) is None
    assert provider.concurrency(NO_TARGET) >= 1
    for host in (None, "web-1", "controller"):
        assert RandomProvider.target_key(host, inventory) is None
    rt = PasswordType()
    record = {"length": 8, "special": True, "keepers": None, "result": "x"}
    # the object is the record in state: absent until state has one
    assert rt.read(NO_TARGET, [ReadItem({"length": 8}, None), ReadItem(None, record),
                               ReadItem({"length": 9}, record)]) == [None, record, record]
    provider.close()
