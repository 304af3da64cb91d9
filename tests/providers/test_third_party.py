"""The provider seam, proved by a plug-in written as a third party would write one.

``tests/plugins/tectum_jsonkeys`` is a package of its own — keys in a JSON file whose
"server" assigns each key an id — with a ``tectum_jsonkeys-0.1.dist-info`` that declares the
entry point ``tectum.providers: jsonkeys``. Putting the directory on ``sys.path`` (or
``PYTHONPATH``) is all it takes for tectum to find it: nothing in tectum names it. Here it
passes the conformance suite in-process, and the ``tectum`` CLI plans a ``jsonkeys_key`` and a
host ``File`` that uses the key's server-assigned id in one graph, upgrades a record the
type's version 0 wrote, then destroys both.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest

from tectum.config.inventory import empty_inventory
from tectum.engine.targets import Targets
from tectum.providers.base import ProviderError, ReadItem
from tectum.providers.registry import registry
from tectum.testing import STEPS, Case, Recorder, ResourceTypeSuite, fresh_registry
from tests.conftest import run_tectum

PLUGIN = Path(__file__).resolve().parent.parent / "plugins" / "tectum_jsonkeys"
SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture
def plugin() -> Iterator[None]:
    """The plug-in's directory on ``sys.path`` and a registry that looks for entry points
    again; afterwards both as they were (and the plug-in's modules forgotten)."""
    sys.path.insert(0, str(PLUGIN))
    importlib.invalidate_caches()
    try:
        with fresh_registry():
            yield
    finally:
        sys.path.remove(str(PLUGIN))
        for name in [m for m in sys.modules if m.split(".")[0] == "tectum_jsonkeys"]:
            del sys.modules[name]
        importlib.invalidate_caches()


def keys_in(path: Path) -> dict[str, dict[str, Any]]:
    if not path.exists():
        return {}
    keys: dict[str, dict[str, Any]] = json.loads(path.read_text())["keys"]
    return keys


def jsonkeys_case(tmp: Path) -> Case:
    store = tmp / "keys.json"

    def tamper(_client: Any, record: dict[str, Any]) -> None:
        data = json.loads(store.read_text())
        data["keys"][record["id"]]["value"] = "changed by hand"
        store.write_text(json.dumps(data))

    return Case("jsonkeys_key", {"name": "api", "value": "one"}, update={"value": "two"},
                tamper=tamper, drift="value", import_id=lambda record: str(record["id"]),
                settings={"path": "keys.json"}, root=str(tmp),
                # the client's one read-only call; every other call counts as mutating
                record=lambda client: Recorder(client, read_only={"list_keys"}))


def test_the_entry_point_is_found_without_installing(plugin: None) -> None:
    found = {ep.name: ep.value for ep in entry_points(group="tectum.providers")}
    assert found["jsonkeys"] == "tectum_jsonkeys.provider:JsonKeysProvider"
    assert registry.provider_of("jsonkeys_key") == "jsonkeys"
    cls = registry.providers()["jsonkeys"]
    assert cls.__module__ == "tectum_jsonkeys.provider" and cls.name == "jsonkeys"
    rt = registry.get("jsonkeys_key")
    assert rt is not None and type(rt).__module__ == "tectum_jsonkeys.provider"
    # the built-in providers are still there, and nothing else changed their names
    assert {"file", "random_password", "jsonkeys_key"} <= set(registry.names())


def test_the_registry_forgets_the_plug_in_with_its_path() -> None:
    assert registry.provider_of("jsonkeys_key") is None


def test_tectum_names_no_plug_in() -> None:
    """The plug-in touches nothing in tectum: no file of the package mentions it."""
    out = subprocess.run(["grep", "-rli", "--include=*.py", "jsonkeys", str(SRC)],
                         capture_output=True, text=True, check=False)
    assert out.stdout == ""


class TestJsonKeys(ResourceTypeSuite):
    """The conformance suite, type-level and engine, over ``jsonkeys_key``."""

    @pytest.fixture
    def case(self, plugin: None, tmp_path: Path) -> Case:
        return jsonkeys_case(tmp_path)


def test_every_step_runs(plugin: None, tmp_path: Path) -> None:
    from tectum.testing import check_resource_type

    report = check_resource_type(jsonkeys_case(tmp_path))
    assert report.done == list(STEPS) and report.skipped == {}
    assert keys_in(tmp_path / "keys.json") == {}
    assert [c.method for c in report.calls if c.mutating] == [
        "create_key", "update_key", "update_key", "delete_key"]


def test_read_finds_a_key_by_its_id_after_a_rename_by_hand(plugin: None,
                                                           tmp_path: Path) -> None:
    """Why read receives the prior record: the id finds the object tectum made when its
    name no longer does (DESIGN decision 9)."""
    targets = Targets(str(tmp_path), "default", empty_inventory(str(tmp_path)),
                      {"jsonkeys": {"path": "keys.json"}})
    try:
        rt = registry.get("jsonkeys_key")
        assert rt is not None
        client = targets.target(rt, None)
        made = client.create_key("api", "v")
        store = tmp_path / "keys.json"
        data = json.loads(store.read_text())
        data["keys"][made["id"]]["name"] = "renamed"
        store.write_text(json.dumps(data))
        by_record, by_name = rt.read(client, [ReadItem({"name": "api"}, made),
                                              ReadItem({"name": "api"}, None)])
        assert by_record == {"id": made["id"], "name": "renamed", "value": "v"}
        assert by_name is None
        assert rt.journal_identity({**made, "value": "v"}) == {"name": "api", "id": made["id"]}
        assert rt.upgrade_state(0, {"key": "api", "value": "v", "id": "x"}) == {
            "name": "api", "value": "v", "id": "x"}
    finally:
        targets.close()


def test_settings_come_from_the_table_or_the_environment(
        plugin: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rt = registry.get("jsonkeys_key")
    assert rt is not None
    inventory = empty_inventory(str(tmp_path))
    with pytest.raises(ProviderError) as info:
        Targets(str(tmp_path), "default", inventory, {}).provider("jsonkeys")
    assert "setting 'path' is required" in next(iter(info.value.diagnostics)).detail
    other = tmp_path / "elsewhere.json"
    monkeypatch.setenv("TECTUM_PROVIDER_JSONKEYS_PATH", str(other))
    targets = Targets(str(tmp_path), "default", inventory, {"jsonkeys": {"path": "keys.json"}})
    try:
        assert targets.target(rt, None).path == str(other)  # the environment wins
        assert targets.provider("jsonkeys").concurrency(None) == 1
    finally:
        targets.close()


STACK = """\
from tectum import output
from tectum.host import File
from tectum_jsonkeys import Key

key = Key("api", value="first")
File("conf", path="{conf}", content=f"api key id: {{key.id}}\\n")
output("key_id", key.id)
"""


def test_the_cli_plans_a_plug_in_key_and_a_host_file_in_one_graph(
        tmp_path: Path, make_project: Any) -> None:
    conf = tmp_path / "app.conf"
    root = make_project(STACK.format(conf=conf), files={
        "tectum.toml": '[providers.jsonkeys]\npath = "keys.json"\n'})
    store = root / "keys.json"
    env = {"PYTHONPATH": os.pathsep.join(
        p for p in (str(PLUGIN), os.environ.get("PYTHONPATH", "")) if p)}

    planned = run_tectum("plan", str(root), env=env)
    assert planned.returncode == 0, planned.output
    assert "jsonkeys_key.api" in planned.stdout and "file.conf" in planned.stdout
    assert "2 to add" in planned.stdout
    assert "known after apply" in planned.stdout  # the file's content waits for the key's id

    applied = run_tectum("apply", "--auto-approve", str(root), env=env)
    assert applied.returncode == 0, applied.output
    keys = keys_in(store)
    assert [k["name"] for k in keys.values()] == ["api"]
    (key_id,) = keys
    assert conf.read_text() == f"api key id: {key_id}\n"
    shown = run_tectum("output", "key_id", "--raw", cwd=root, env=env)
    assert shown.stdout.strip() == key_id, shown.output

    again = run_tectum("plan", "--detailed-exitcode", str(root), env=env)
    assert again.returncode == 0, again.output  # no changes

    # a record written by version 0 of the type (the name was called "key") is upgraded by
    # the plug-in's upgrade_state when state is read: the plan is still empty
    pulled = run_tectum("state", "pull", str(root), env=env)
    assert pulled.returncode == 0, pulled.output
    document = json.loads(pulled.stdout)
    (record,) = [r for r in document["resources"] if r["type"] == "jsonkeys_key"]
    assert record["schema_version"] == 1 and record["attributes"]["name"] == "api"
    record["attributes"]["key"] = record["attributes"].pop("name")
    del record["schema_version"]
    document["serial"] += 1
    old = tmp_path / "old-state.json"
    old.write_text(json.dumps(document))
    pushed = run_tectum("state", "push", str(old), str(root), env=env)
    assert pushed.returncode == 0, pushed.output
    upgraded = run_tectum("plan", "--detailed-exitcode", str(root), env=env)
    assert upgraded.returncode == 0, upgraded.output

    destroyed = run_tectum("destroy", "--auto-approve", str(root), env=env)
    assert destroyed.returncode == 0, destroyed.output
    assert keys_in(store) == {} and not conf.exists()


def test_without_the_plug_in_a_project_fails_cleanly(tmp_path: Path, make_project: Any
                                                      ) -> None:
    settings = {"tectum.toml": '[providers.jsonkeys]\npath = "keys.json"\n'}
    root = make_project(STACK.format(conf=tmp_path / "app.conf"), files=settings)
    result = run_tectum("plan", str(root))
    assert result.returncode == 1
    assert "No module named 'tectum_jsonkeys'" in result.output
    assert "Traceback" not in result.output
    # settings for a provider that is not installed are refused, naming it
    root = make_project('from tectum.host import Directory\n'
                        f'Directory("d", path="{tmp_path}/d")\n', files=settings, name="other")
    result = run_tectum("plan", str(root))
    assert result.returncode == 1, result.output
    assert "no installed provider is named 'jsonkeys'" in result.output
    assert "Traceback" not in result.output
