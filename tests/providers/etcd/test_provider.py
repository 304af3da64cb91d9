"""The etcd provider's own rules, on a real etcd: reads in a constant number of round trips,
settings and bad input refused with diagnostics (never a traceback), an unreachable etcd
named, objects managed twice refused, and a data key that reads again when the stack changes
what it reads."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tectum.providers.base import ReadItem
from tectum.providers.etcd.client import EtcdClient
from tectum.providers.registry import registry
from tests.conftest import Result, ok
from tests.harness.etcd import Etcd, EtcdSpace, _free_port


def test_a_thousand_keys_are_read_in_one_round_trip(etcd: EtcdSpace) -> None:
    client = etcd.server.client()
    keys = {etcd.key(f"svc{i % 10}/k{i:04d}"): f"v{i}" for i in range(1000)}
    client.commit(keys, [])
    rt = registry.get("etcd_key")
    assert rt is not None
    items = [ReadItem({"key": k, "value": v, "lease_ttl": None}, None) for k, v in keys.items()]
    items.append(ReadItem({"key": etcd.key("svc1/absent"), "value": "x"}, None))
    mine = EtcdClient([etcd.server.endpoint])
    try:
        mine.status()
        before, sent = mine.round_trips, mine.transactions
        found = rt.read(mine, items)
        # one round trip: 8 transactions of at most 128 exact-key reads, sent together
        assert mine.round_trips - before == 1
        assert mine.transactions - sent == 8
    finally:
        mine.close()
    assert [f["value"] if f else None for f in found] == [*keys.values(), None]
    prefixes = registry.get("etcd_key_prefix")
    assert prefixes is not None
    count = client.round_trips
    got = prefixes.read(client, [ReadItem({"prefix": etcd.key(f"svc{i}/"), "values": {}},
                                          None) for i in range(10)])
    assert client.round_trips - count == 1
    assert all(g is not None and len(g["values"]) == 100 for g in got)


def test_a_plan_reads_every_etcd_resource_in_one_round_trip(etcd: EtcdSpace) -> None:
    """begin_read fetches the keys and prefixes of all four types in one transaction; the
    reads (and the missing-key check) are answered from it."""
    from tectum.providers.etcd.provider import EtcdProvider

    client = etcd.server.client()
    client.commit({etcd.key(f"a/k{i}"): str(i) for i in range(50)}
                  | {etcd.key(f"p/s{i}"): str(i) for i in range(5)}, [])
    batches: list[tuple[Any, list[ReadItem]]] = []
    for name, items in (
            ("etcd_key", [ReadItem({"key": etcd.key(f"a/k{i}"), "value": "x"}, None)
                          for i in range(50)]),
            ("etcd_key_prefix", [ReadItem({"prefix": etcd.key("p/"), "values": {}}, None)]),
            ("etcd_data_key", [ReadItem({"key": etcd.key("a/k1")}, None),
                               ReadItem({"key": etcd.key("nowhere")}, None)]),
            ("etcd_data_key_prefix", [ReadItem({"prefix": etcd.key("a/")}, None)])):
        rt = registry.get(name)
        assert rt is not None
        batches.append((rt, items))
    provider = EtcdProvider()
    before = client.round_trips
    provider.begin_read(client, batches)
    try:
        found = [rt.read(client, items) for rt, items in batches]
        needs = batches[2][0].missing(client, batches[2][1])
    finally:
        provider.end_read(client)
    assert client.round_trips - before == 1
    assert [f is not None for f in found[0]] == [True] * 50
    assert found[1][0] is not None and len(found[1][0]["values"]) == 5
    assert found[2][0] is not None and found[2][0]["value"] == "1" and found[2][1] is None
    assert needs[0] == [] and "etcd has no key" in needs[1][0][1]
    assert found[3][0] is not None and len(found[3][0]["values"]) == 50


def bad(tectum: Callable[..., Result], root: Path, *needles: str) -> str:
    result = tectum("plan", cwd=root)
    assert result.returncode == 1, result.output
    assert "Traceback" not in result.output, result.output
    for needle in needles:
        assert needle in result.output, result.output
    return result.output


KEY_STACK = 'from tectum.etcd import Key\nKey("k", key="/tectum-test/bad/k", value="v")\n'


@pytest.mark.parametrize("table, needle", [
    ('endpoints = ["nonsense"]', "'nonsense' is not an endpoint"),
    ('endpoints = []', "non-empty list"),
    ('endpoints = ["127.0.0.1:2379"]\nusername = "root"\npassword = "from-the-file"',
     "a password is never written in tectum.toml"),
    ('endpoints = ["127.0.0.1:2379"]\nusername = "root"', "username and password go together"),
    ('endpoints = ["127.0.0.1:2379"]\ncert = "client.pem"', "cert and key go together"),
    ('endpoints = ["127.0.0.1:2379"]\nca_cert = "nowhere.pem"', "no such file"),
    ('endpoints = ["127.0.0.1:2379"]\ntimeout = 0', "more than 0"),
    ('endpoint = "127.0.0.1:2379"', "unknown setting 'endpoint'"),
])
def test_bad_settings_are_diagnostics(tectum: Callable[..., Result],
                                      make_project: Callable[..., Path], table: str,
                                      needle: str) -> None:
    root = make_project(KEY_STACK, {"tectum.toml": f"[providers.etcd]\n{table}\n"})
    out = bad(tectum, root, "Invalid provider settings", needle)
    assert "from-the-file" not in out


def test_an_unreachable_etcd_is_named_and_nothing_is_planned(
        tectum: Callable[..., Result], make_project: Callable[..., Path]) -> None:
    port = _free_port()
    root = make_project(KEY_STACK, {"tectum.toml":
                                    f'[providers.etcd]\nendpoints = ["127.0.0.1:{port}"]\n'})
    # (the provider reports its server down: the planner stops, review item 12)
    out = bad(tectum, root, f"etcd is unreachable at 127.0.0.1:{port}",
              "Cannot reach a provider's server")
    assert "to add" not in out  # (never taken for an empty etcd)


@pytest.mark.parametrize("stack, needle", [
    ('Key("e", key="", value="x")', "an etcd key cannot be empty"),
    ('Key("e", key="P/a", value="x", lease_ttl=1)', "must be 2 to"),
    ('Key("e", key="P/a")', "Missing required argument"),
    ('KeyPrefix("p", prefix="P/", values={"a": 1})', "SUBKEY: VALUE"),
    ('KeyPrefix("p", prefix="", values={})', "an etcd prefix cannot be empty"),
    ('Key("a", key="P/x", value="1")\nKey("b", key="P/x", value="2")', "Object managed twice"),
    ('KeyPrefix("p", prefix="P/d/", values={})\nKey("k", key="P/d/x", value="1")',
     "etcd keys managed twice"),
    ('KeyPrefix("p", prefix="P/d/", values={})\nKey("k", key="P/d/sub/x", value="1")',
     "under the prefix"),
    ('KeyPrefix("p", prefix="P/d/", values={})\nKeyPrefix("q", prefix="P/d/in/", values={})',
     "etcd_key_prefix.q writes the prefix"),
    ('DataKey("d", key="P/x", value="set")', "computed by the provider"),
])
def test_bad_input_is_a_diagnostic(tectum: Callable[..., Result],
                                   make_project: Callable[..., Path], etcd: EtcdSpace,
                                   stack: str, needle: str) -> None:
    text = "from tectum.etcd import DataKey, Key, KeyPrefix\n" + \
        stack.replace("P/", etcd.prefix) + "\n"
    root = make_project(text, {"tectum.toml": etcd.server.toml()})
    bad(tectum, root, needle)
    assert etcd.keys() == {}


def test_a_data_key_reads_again_when_the_stack_changes_its_key(
        tectum: Callable[..., Result], make_project: Callable[..., Path], etcd: EtcdSpace,
        tmp_path: Path) -> None:
    """The data key is declared *before* the key it reads: it is still linked (run_on), so
    the file built from it gets the new value in the same apply, not one apply later."""
    out = tmp_path / "port.txt"
    stack = f'''
from tectum import var
from tectum.etcd import DataKey, Key
from tectum.host import File
port = var("port", str, default="8080")
read = DataKey("read", key="{etcd.prefix}port")
Key("port", key="{etcd.prefix}port", value=port)
File("out", path="{out}", content=f"port={{read.value}}\\n")
'''
    root = make_project(stack, {"tectum.toml": etcd.server.toml()})
    ok(tectum("apply", "-auto-approve", cwd=root))
    assert out.read_text() == "port=8080\n"
    plan = ok(tectum("plan", "-var", "port=9090", cwd=root)).output
    assert "etcd_data_key.read" in plan and "etcd_key.port changed" in plan, plan
    ok(tectum("apply", "-auto-approve", "-var", "port=9090", cwd=root))
    assert out.read_text() == "port=9090\n"
    assert "No changes" in ok(tectum("plan", "-var", "port=9090", cwd=root)).output
    ok(tectum("destroy", "-auto-approve", "-var", "port=9090", cwd=root))
    assert etcd.keys() == {}


def test_a_second_endpoint_is_used_when_the_first_does_not_answer(etcd_server: Etcd) -> None:
    client = EtcdClient([f"127.0.0.1:{_free_port()}", etcd_server.endpoint], timeout=2)
    try:
        assert client.status().startswith("3.")
        assert client.unreachable is None
    finally:
        client.close()


def test_data_keys_share_a_key_and_a_re_pointed_read_is_no_drift(
        tectum: Callable[..., Result], make_project: Callable[..., Path], etcd: EtcdSpace,
        tmp_path: Path) -> None:
    etcd.server.put(etcd.key("a"), "first")
    etcd.server.put(etcd.key("b"), "second")
    out = tmp_path / "read.txt"
    stack = '''
from tectum.etcd import DataKey
from tectum.host import File
one = DataKey("one", key="PKEY")
DataKey("same", key="PA")
File("out", path="OUT", content=f"{one.value}\\n")
'''.replace("PA", etcd.key("a")).replace("OUT", str(out))
    root = make_project(stack.replace("PKEY", etcd.key("a")),
                        {"tectum.toml": etcd.server.toml()})
    ok(tectum("apply", "-auto-approve", cwd=root))  # (two reads of one key: allowed)
    assert out.read_text() == "first\n"
    (root / "stack.py").write_text(stack.replace("PKEY", etcd.key("b")))
    plan = ok(tectum("plan", cwd=root)).output
    assert "changed outside" not in plan and "Objects changed" not in plan, plan
    ok(tectum("apply", "-auto-approve", cwd=root))
    assert out.read_text() == "second\n"
    assert "No changes" in ok(tectum("plan", cwd=root)).output
    ok(tectum("destroy", "-auto-approve", cwd=root))
    assert etcd.keys() == {etcd.key("a"): "first", etcd.key("b"): "second"}  # only read
