"""The etcd provider through the real CLI, on the test's own key prefix of a real etcd: apply,
10 plans in a row without a change, a template on this machine rendering values read from etcd
(``DataKey``, ``DataKeyPrefix``), drift of every kind (a value changed by hand, a key deleted,
a key written under an authoritative prefix, a lease expired) repaired by the next apply,
import of every type, and a destroy that deletes only what tectum wrote."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.conftest import Result, ok
from tests.harness.etcd import EtcdSpace

STACK = '''
from tectum import output
from tectum.etcd import DataKey, DataKeyPrefix, Key, KeyPrefix
from tectum.host import File

P = "PREFIX"
port = Key("port", key=P + "app/port", value="8080")
Key("mode", key=P + "app/mode", value="blue")
KeyPrefix("flags", prefix=P + "flags/", values={"beta": "on", "cache": "64"})
read_port = DataKey("read_port", key=P + "app/port")
region = DataKey("region", key=P + "ext/region", default="eu")
flags = DataKeyPrefix("read_flags", prefix=P + "flags/")
File("conf", path="OUT", template="app.conf.j2",
     vars={"port": read_port.value, "region": region.value})
output("port_revision", port.mod_revision)
output("flags", flags.values)
'''

TEMPLATE = '''\
port={{ port }}
region={{ region }}
'''


def project(make_project: Callable[..., Path], etcd: EtcdSpace, tmp_path: Path,
            stack: str = STACK) -> Path:
    out = tmp_path / "app.conf"
    return make_project(stack.replace("PREFIX", etcd.prefix).replace("OUT", str(out)),
                        {"tectum.toml": etcd.server.toml(), "app.conf.j2": TEMPLATE})


def no_changes(tectum: Callable[..., Result], root: Path) -> None:
    out = ok(tectum("plan", cwd=root)).output
    assert "No changes" in out, out


def test_apply_renders_read_values_and_ten_plans_change_nothing(
        tectum: Callable[..., Result], make_project: Callable[..., Path], etcd: EtcdSpace,
        tmp_path: Path) -> None:
    root = project(make_project, etcd, tmp_path)
    first = ok(tectum("plan", cwd=root)).output
    assert "+ etcd_key.port" in first and "+ etcd_key_prefix.flags" in first
    ok(tectum("apply", "-auto-approve", cwd=root))
    p = etcd.prefix
    assert etcd.keys() == {p + "app/port": "8080", p + "app/mode": "blue",
                           p + "flags/beta": "on", p + "flags/cache": "64"}
    assert (tmp_path / "app.conf").read_text() == "port=8080\nregion=eu\n"
    shown = ok(tectum("output", "-json", "flags", "-dir", str(root))).stdout
    assert json.loads(shown) == {"beta": "on", "cache": "64"}, shown
    for _ in range(10):
        no_changes(tectum, root)
    # a value changed in etcd reaches the file with the next apply
    etcd.server.put(p + "ext/region", "us")
    plan = ok(tectum("plan", cwd=root)).output
    assert "etcd_data_key.region" in plan and "file.conf" in plan, plan
    ok(tectum("apply", "-auto-approve", cwd=root))
    assert "region=us" in (tmp_path / "app.conf").read_text()
    no_changes(tectum, root)
    destroyed = ok(tectum("destroy", "-auto-approve", cwd=root)).output
    assert "Destroy complete" in destroyed or "destroyed" in destroyed, destroyed
    # only what tectum wrote went: the key it read (never wrote) stays
    assert etcd.keys() == {p + "ext/region": "us"}


def test_drift_is_reported_and_repaired(tectum: Callable[..., Result],
                                        make_project: Callable[..., Path], etcd: EtcdSpace,
                                        tmp_path: Path) -> None:
    root = project(make_project, etcd, tmp_path)
    ok(tectum("apply", "-auto-approve", cwd=root))
    p = etcd.prefix
    client = etcd.server.client()
    client.put(p + "app/port", "9999")              # a value changed by hand
    client.delete_keys([p + "app/mode"])           # a key deleted
    client.put(p + "flags/rogue", "x")              # a key tectum does not manage, under the prefix
    drift = ok(tectum("drift", cwd=root)).output
    assert "etcd_key.port" in drift and "etcd_key.mode" in drift \
        and "etcd_key_prefix.flags" in drift, drift
    plan = ok(tectum("plan", cwd=root)).output
    assert '"9999" → "8080"' in plan, plan
    assert "+ etcd_key.mode" in plan and "changed outside tectum: deleted" in plan, plan
    assert '"rogue": "x"' in plan, plan                # the unknown key is shown...
    ok(tectum("apply", "-auto-approve", cwd=root))
    assert etcd.keys() == {p + "app/port": "8080", p + "app/mode": "blue",
                           p + "flags/beta": "on", p + "flags/cache": "64"}  # ...and gone
    assert (tmp_path / "app.conf").read_text().startswith("port=8080\n")
    no_changes(tectum, root)
    ok(tectum("destroy", "-auto-approve", cwd=root))
    assert etcd.keys() == {}


def test_an_expired_lease_is_drift_and_a_new_lease_repairs_it(
        tectum: Callable[..., Result], make_project: Callable[..., Path], etcd: EtcdSpace,
        tmp_path: Path) -> None:
    """The lease ends as an expiry ends it (etcd revokes it, deleting its key): revoked by
    hand here, so no step depends on how long another one takes."""
    stack = '''
from tectum.etcd import Key
Key("alive", key="PREFIXnode/1", value="up", lease_ttl=600)
'''
    root = project(make_project, etcd, tmp_path, stack)
    ok(tectum("apply", "-auto-approve", cwd=root))
    key = etcd.prefix + "node/1"
    client = etcd.server.client()
    first = client.get_keys([key])[key]
    assert first.lease != 0
    no_changes(tectum, root)  # (within the TTL: nothing to do)
    assert client.revoke(first.lease)  # (the lease ends: etcd deletes the key)
    assert etcd.keys() == {}
    plan = ok(tectum("plan", cwd=root)).output
    assert "etcd_key.alive" in plan and "deleted" in plan, plan
    ok(tectum("apply", "-auto-approve", cwd=root))
    again = client.get_keys([key])[key]
    assert again.value == "up" and again.lease not in (0, first.lease)
    ok(tectum("destroy", "-auto-approve", cwd=root))
    assert etcd.keys() == {}


def test_import_of_every_type_then_no_changes(tectum: Callable[..., Result],
                                              make_project: Callable[..., Path],
                                              etcd: EtcdSpace, tmp_path: Path) -> None:
    p = etcd.prefix
    etcd.server.put(p + "imp/one", "1")
    etcd.server.put(p + "pre/a", "A")
    etcd.server.put(p + "pre/b", "B")
    stack = '''
from tectum.etcd import Key, KeyPrefix
Key("one", key="PREFIXimp/one", value="1")
KeyPrefix("pre", prefix="PREFIXpre/", values={"a": "A", "b": "B"})
'''
    root = project(make_project, etcd, tmp_path, stack)
    ok(tectum("import", "etcd_key.one", p + "imp/one", cwd=root))
    ok(tectum("import", "etcd_key_prefix.pre", p + "pre/", cwd=root))
    no_changes(tectum, root)
    # imported objects were there before tectum: destroy forgets them, deletes nothing
    ok(tectum("destroy", "-auto-approve", cwd=root))
    assert etcd.keys() == {p + "imp/one": "1", p + "pre/a": "A", p + "pre/b": "B"}


def test_a_prefix_destroy_deletes_only_its_keys_and_says_so(
        tectum: Callable[..., Result], make_project: Callable[..., Path], etcd: EtcdSpace,
        tmp_path: Path) -> None:
    stack = '''
from tectum.etcd import KeyPrefix
KeyPrefix("pre", prefix="PREFIXpre/", values={"a": "A", "b": "B"})
'''
    root = project(make_project, etcd, tmp_path, stack)
    ok(tectum("apply", "-auto-approve", cwd=root))
    etcd.server.put(etcd.prefix + "pre/late", "written after the apply")
    etcd.server.put(etcd.prefix + "other", "not under the prefix")
    plan = ok(tectum("plan", "-destroy", cwd=root)).output
    assert "deletes the 2 key(s) it created under" in plan and "(a, b)" in plan, plan
    ok(tectum("destroy", "-auto-approve", cwd=root))
    assert etcd.keys() == {etcd.prefix + "pre/late": "written after the apply",
                           etcd.prefix + "other": "not under the prefix"}


def test_a_missing_key_to_read_is_a_plan_error(tectum: Callable[..., Result],
                                               make_project: Callable[..., Path],
                                               etcd: EtcdSpace, tmp_path: Path) -> None:
    stack = '''
from tectum.etcd import DataKey
DataKey("nothing", key="PREFIXnot/there")
'''
    root = project(make_project, etcd, tmp_path, stack)
    result = tectum("plan", cwd=root)
    assert result.returncode == 1, result.output
    assert "etcd has no key" in result.output and "not/there" in result.output
    assert "Traceback" not in result.output


def test_a_key_that_was_there_before_is_taken_over_and_left_on_destroy(
        tectum: Callable[..., Result], make_project: Callable[..., Path], etcd: EtcdSpace,
        tmp_path: Path) -> None:
    etcd.server.put(etcd.key("old"), "someone else's")
    stack = '''
from tectum.etcd import Key
Key("old", key="PREFIXold", value="tectum's")
Key("new", key="PREFIXnew", value="made by tectum")
'''
    root = project(make_project, etcd, tmp_path, stack)
    plan = ok(tectum("plan", cwd=root)).output
    assert "found already there" in plan, plan
    ok(tectum("apply", "-auto-approve", cwd=root))
    ok(tectum("destroy", "-auto-approve", cwd=root))
    assert etcd.keys() == {etcd.key("old"): "tectum's"}  # forgotten, not deleted
