"""Regression tests of the review of the etcd provider (one per item fixed), on a real etcd:
secrets of a prefix masked when read, keys nested under an authoritative prefix refused,
leases revoked (a failed put, an update, a destroy, a killed run's grant), reads of exact keys
under etcd's RBAC and past gRPC's 4 MB, an expired auth token renewed, an unreachable etcd
reported down and failing fast, the keys a sensitive prefix deletes named, a REPLACE of a
prefix deleting what its plan showed, a key that is not UTF-8 deleted, a taken-over prefix's
destroy, a closed client, IPv6 endpoints, a password in tectum.toml refused."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from pathlib import Path

import pytest

from tectum.plans.plan import Action, ResourceChange
from tectum.providers.base import ReadItem
from tectum.providers.etcd.client import EtcdClient, EtcdError, lease_ids
from tectum.providers.etcd.provider import EtcdProvider
from tectum.providers.registry import registry
from tests.conftest import Result, ok
from tests.harness.etcd import Etcd, EtcdSpace, _free_port, running_etcd


def our_leases(client: EtcdClient, key: str) -> list[int]:
    """tectum's leases of ``key`` that etcd holds."""
    return sorted(set(client.leases()) & set(lease_ids(key)))


def test_a_leased_key_leaves_no_lease_behind(tectum: Callable[..., Result],
                                             make_project: Callable[..., Path],
                                             etcd: EtcdSpace) -> None:
    """Item 4: an update revokes the previous lease, a destroy revokes the last one."""
    key = etcd.key("node/1")
    stack = f'from tectum import var\nfrom tectum.etcd import Key\n' \
            f'Key("alive", key="{key}", value=var("v", str, default="up"), lease_ttl=600)\n'
    root = make_project(stack, {"tectum.toml": etcd.server.toml()})
    client = etcd.server.client()
    ok(tectum("apply", "-auto-approve", cwd=root))
    first = our_leases(client, key)
    assert len(first) == 1 and client.get_keys([key])[key].lease == first[0]
    ok(tectum("apply", "-auto-approve", "-var", "v=down", cwd=root))
    second = our_leases(client, key)
    assert len(second) == 1 and second != first, (first, second)
    assert client.get_keys([key])[key].lease == second[0]
    ok(tectum("destroy", "-auto-approve", "-var", "v=down", cwd=root))
    assert our_leases(client, key) == [] and etcd.keys() == {}


def test_a_failed_put_revokes_its_lease_and_says_no_retry(etcd: EtcdSpace) -> None:
    """Item 4: etcd refuses a value over its request limit: the lease granted for it is
    revoked, and the message does not promise that another apply will do."""
    rt = registry.get("etcd_key")
    assert rt is not None
    key = etcd.key("big")
    client = etcd.server.client()
    change = ResourceChange(address="etcd_key.big", type="etcd_key", action=Action.CREATE,
                            before=None,
                            after={"key": key, "value": "x" * (2 * 1024 * 1024),
                                   "lease_ttl": 600})
    with pytest.raises(Exception) as caught:
        rt.apply(client, change)
    assert "once etcd answers" not in str(caught.value), caught.value
    assert our_leases(client, key) == []
    assert etcd.keys() == {}


def test_a_lease_left_by_a_killed_run_is_swept(etcd: EtcdSpace) -> None:
    """Item 4: the journal identity names the lease ids before the grant; the sweep revokes
    one that holds no key, and leaves one that holds the key."""
    rt = registry.get("etcd_key")
    assert rt is not None
    client = etcd.server.client()
    key, kept = etcd.key("orphan"), etcd.key("kept")
    identity = rt.journal_identity({"key": key, "value": "v", "lease_ttl": 60})
    assert identity["leases"] == list(lease_ids(key))
    client.grant(60, lease_ids(key)[0])  # (granted, then killed before the put)
    client.put_leased(kept, "v", 60, lease_ids(kept)[1])
    rt.sweep_interrupted(client, [identity,
                                  rt.journal_identity({"key": kept, "value": "v"})])
    assert our_leases(client, key) == []
    assert our_leases(client, kept) == [lease_ids(kept)[1]]
    client.revoke(lease_ids(kept)[1])


def test_a_data_key_in_a_role_reads_again_when_a_key_outside_it_changes(
        tectum: Callable[..., Result], make_project: Callable[..., Path], etcd: EtcdSpace,
        tmp_path: Path) -> None:
    """Item 7: a data key declared in a role (on host h1) watches the Key written outside
    any role (every host reaches one etcd): the file built from it gets the new value in the
    same apply, and no drift is reported."""
    out = tmp_path / "port.txt"
    stack = f'''
from tectum import apply_role, var
from tectum.etcd import DataKey, Key
from tectum.host import File
Key("port", key="{etcd.key("port")}", value=var("port", str, default="8080"))
def role(host):
    read = DataKey("read", key="{etcd.key("port")}")
    File("out", path="{out}", content=f"port={{read.value}}\\n")
apply_role(role, "h1")
'''
    root = make_project(stack, {"tectum.toml": etcd.server.toml(),
                                "inventory.toml": '[hosts.h1]\nconnector = "local"\n'})
    ok(tectum("apply", "-auto-approve", cwd=root))
    assert out.read_text() == "port=8080\n"
    plan = ok(tectum("plan", "-var", "port=9090", cwd=root)).output
    assert "changed outside" not in plan, plan
    ok(tectum("apply", "-auto-approve", "-var", "port=9090", cwd=root))
    assert out.read_text() == "port=9090\n"
    assert "No changes" in ok(tectum("plan", "-var", "port=9090", cwd=root)).output
    ok(tectum("destroy", "-auto-approve", "-var", "port=9090", cwd=root))


def test_exact_keys_are_read_under_rbac_and_past_4_mb(tmp_path: Path) -> None:
    """Item 2: a user whose role covers exactly one key reads it (never its directory), and
    a prefix holding 6 MB is read (gRPC's default limit is 4 MB). Item 5: after the auth
    token expired (``--auth-token-ttl 2``) the client authenticates again and the call works.
    """
    from tests.providers.etcd.test_tls_auth import _enable_auth

    root_pw = f"pw-{secrets.token_hex(8)}"
    user_pw = f"pw-{secrets.token_hex(8)}"
    with running_etcd(tmp_path, args=("--auth-token-ttl", "2")) as server:
        server.client().commit({"/cfg/a": "A", "/cfg/b": "B"}, [])
        for i in range(6):  # (one put per request: etcd takes requests of 1.5 MB at most)
            server.client().put(f"/big/v{i}", "x" * (1024 * 1024))
        _enable_auth(server.endpoint, root_pw)
        _user_with_key(server, root_pw, "reader", user_pw, "/cfg/a")
        user = EtcdClient([server.endpoint], timeout=5, username="reader",
                          password=user_pw)
        admin = EtcdClient([server.endpoint], timeout=5, username="root", password=root_pw)
        try:
            assert user.get_keys(["/cfg/a"])["/cfg/a"].value == "A"
            found = admin.get_prefixes(["/big/"])["/big/"]
            assert len(found) == 6 and all(len(kv.value) == 1024 * 1024
                                           for kv in found.values())
            with pytest.raises(EtcdError, match="permission denied"):
                user.get_keys(["/cfg/b"])
            asyncio.run(asyncio.sleep(3.5))  # (etcd's simple token expires)
            assert user.get_keys(["/cfg/a"])["/cfg/a"].value == "A"
            assert user.reauthentications == 1
        finally:
            user.close()
            admin.close()


def _user_with_key(server: Etcd, root_pw: str, name: str, password: str, key: str) -> None:
    import aetcd
    from aetcd import rpc

    async def run() -> None:
        host, port = server.endpoint.split(":")
        client = aetcd.Client(host=host, port=int(port), username="root", password=root_pw,
                              timeout=5)
        await client.connect()
        auth = rpc.AuthStub(client.channel)
        md = client.metadata
        await auth.RoleAdd(rpc.AuthRoleAddRequest(name=name), metadata=md)
        await auth.RoleGrantPermission(rpc.AuthRoleGrantPermissionRequest(
            name=name, perm=rpc.Permission(permType=rpc.Permission.READWRITE,
                                           key=key.encode())), metadata=md)
        await auth.UserAdd(rpc.AuthUserAddRequest(name=name, password=password), metadata=md)
        await auth.UserGrantRole(rpc.AuthUserGrantRoleRequest(user=name, role=name),
                                 metadata=md)
        await client.close()

    asyncio.run(run())


def test_an_unreachable_etcd_is_down_fails_fast_and_recovers(etcd_server: Etcd) -> None:
    """Item 12: after a call found no endpoint, the provider reports the target down and
    the next call fails at once (no round trip); a call that succeeds clears it."""
    client = EtcdClient([f"127.0.0.1:{_free_port()}"], timeout=2)
    provider = EtcdProvider()
    try:
        with pytest.raises(EtcdError, match="unreachable"):
            client.status()
        down = provider.down(client)
        assert down is not None and "etcd is unreachable at" in down[1]
        trips = client.round_trips
        with pytest.raises(EtcdError, match="unreachable") as caught:
            client.get_keys(["/x"])
        assert caught.value.unreachable and client.round_trips == trips  # (at once)
        client.endpoints = [etcd_server.endpoint]  # (etcd answers again...)
        client._unreachable_at -= client.timeout  # (...after the fail-fast window)
        assert client.status().startswith("3.")
        assert provider.down(client) is None
    finally:
        client.close()


def test_a_sensitive_prefix_names_the_keys_it_deletes_and_masks_what_it_reads(
        tectum: Callable[..., Result], make_project: Callable[..., Path],
        etcd: EtcdSpace) -> None:
    """Items 6 and 1: the plan names the subkey the apply deletes (values masked), and a
    value written by hand under a sensitive prefix never shows."""
    pw = f"canary-{secrets.token_hex(8)}"
    hand = f"canary-{secrets.token_hex(8)}"
    stack = f'''
from tectum import var
from tectum.etcd import KeyPrefix
pw = var("pw", str, sensitive=True)
KeyPrefix("cfg", prefix="{etcd.key("cfg/")}", values={{"dsn": f"postgres://u:{{pw}}@db/x"}})
'''
    root = make_project(stack, {"tectum.toml": etcd.server.toml()})
    env = {"TECTUM_VAR_pw": pw}
    ok(tectum("apply", "-auto-approve", cwd=root, env=env))
    etcd.server.put(etcd.key("cfg/rogue"), "r")
    etcd.server.put(etcd.key("cfg/dsn"), f"postgres://u:{hand}@db/x")
    outs = [ok(tectum(*args, cwd=root, env=env)).output
            for args in (("drift",), ("plan",), ("plan", "-json"), ("refresh",))]
    assert '"rogue"' in outs[1] and "deletes" in outs[1], outs[1]
    ok(tectum("apply", "-auto-approve", cwd=root, env=env))
    assert etcd.keys() == {etcd.key("cfg/dsn"): f"postgres://u:{pw}@db/x"}
    stored = b"".join(p.read_bytes() for p in (root / ".tectum").rglob("*") if p.is_file())
    for text in outs:
        assert hand not in text and pw not in text, text
    assert hand.encode() not in stored and pw.encode() not in stored
    ok(tectum("destroy", "-auto-approve", cwd=root, env=env))


def test_a_prefix_replaced_deletes_what_its_plan_showed(
        tectum: Callable[..., Result], make_project: Callable[..., Path],
        etcd: EtcdSpace) -> None:
    """Item 14: ``-replace`` of a prefix plans the unknown key under it removed: the apply
    deletes it. A REPLACE to another prefix shows nothing of the new prefix's keys and
    deletes none: the next plan shows the unknown key there as drift."""
    stack = 'from tectum import var\nfrom tectum.etcd import KeyPrefix\n' \
            'KeyPrefix("p", prefix=var("at", str), values={"a": "1"})\n'
    root = make_project(stack, {"tectum.toml": etcd.server.toml()})
    one, two = etcd.key("one/"), etcd.key("two/")
    at_one, at_two = ("-var", f"at={one}"), ("-var", f"at={two}")
    ok(tectum("apply", "-auto-approve", *at_one, cwd=root))
    etcd.server.put(one + "rogue", "r")
    plan = ok(tectum("plan", "-replace", "etcd_key_prefix.p", *at_one, cwd=root)).output
    assert "rogue" in plan and "replace" in plan, plan
    ok(tectum("apply", "-auto-approve", "-replace", "etcd_key_prefix.p", *at_one, cwd=root))
    assert etcd.keys() == {one + "a": "1"}
    etcd.server.put(two + "rogue", "r")
    plan = ok(tectum("plan", *at_two, cwd=root)).output
    assert "rogue" not in plan, plan
    ok(tectum("apply", "-auto-approve", *at_two, cwd=root))
    assert etcd.keys() == {two + "a": "1", two + "rogue": "r"}
    plan = ok(tectum("plan", *at_two, cwd=root)).output
    assert "rogue" in plan and "changed outside tectum" in plan, plan
    ok(tectum("apply", "-auto-approve", *at_two, cwd=root))
    ok(tectum("destroy", "-auto-approve", *at_two, cwd=root))
    assert etcd.keys() == {}


def test_a_key_that_is_not_utf8_is_deleted_as_planned(
        tectum: Callable[..., Result], make_project: Callable[..., Path],
        etcd: EtcdSpace) -> None:
    """Item 8: a key under the prefix whose bytes are not UTF-8 is shown escaped and
    deleted by its bytes."""
    prefix = etcd.key("raw/")
    raw = prefix.encode() + b"bad\xff"
    client = etcd.server.client()
    client.call("put a raw key", lambda c: c.put(raw, b"v"))
    stack = f'from tectum.etcd import KeyPrefix\n' \
            f'KeyPrefix("p", prefix="{prefix}", values={{"a": "1"}})\n'
    root = make_project(stack, {"tectum.toml": etcd.server.toml()})
    plan = ok(tectum("plan", cwd=root)).output
    assert "bad\\\\xff" in plan or "bad\\xff" in plan, plan
    ok(tectum("apply", "-auto-approve", cwd=root))
    assert client.raw_keys(prefix) == [prefix.encode() + b"a"]
    assert "No changes" in ok(tectum("plan", cwd=root)).output
    ok(tectum("destroy", "-auto-approve", cwd=root))


def test_a_prefix_taken_over_deletes_on_destroy_only_the_keys_tectum_created(
        tectum: Callable[..., Result], make_project: Callable[..., Path],
        etcd: EtcdSpace) -> None:
    """Item 11: the key that was there before is left; the one tectum made is deleted."""
    prefix = etcd.key("over/")
    etcd.server.put(prefix + "old", "before")
    stack = f'from tectum.etcd import KeyPrefix\n' \
            f'KeyPrefix("p", prefix="{prefix}", values={{"old": "x", "new": "y"}})\n'
    root = make_project(stack, {"tectum.toml": etcd.server.toml()})
    ok(tectum("apply", "-auto-approve", cwd=root))
    assert etcd.keys() == {prefix + "old": "x", prefix + "new": "y"}
    assert "No changes" in ok(tectum("plan", cwd=root)).output
    plan = ok(tectum("plan", "-destroy", cwd=root)).output
    assert "deletes the 1 key(s) it created" in plan and "(new)" in plan, plan
    ok(tectum("destroy", "-auto-approve", cwd=root))
    assert etcd.keys() == {prefix + "old": "x"}


def test_a_closed_client_refuses_calls(etcd_server: Etcd) -> None:
    """Item 9: a call after close raises EtcdError (no new loop starts); a call in flight
    when the client closes raises EtcdError too."""
    import threading

    client = EtcdClient([etcd_server.endpoint], timeout=5)
    assert client.status().startswith("3.")
    errors: list[BaseException] = []
    started = threading.Event()

    async def slow(c: object) -> None:
        started.set()
        await asyncio.sleep(30)

    def run() -> None:
        try:
            client.call("wait", slow)
        except BaseException as exc:  # noqa: BLE001 - what the call raised is checked
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    assert started.wait(10)
    client.close()
    thread.join(15)
    assert not thread.is_alive() and len(errors) == 1
    assert isinstance(errors[0], EtcdError), errors
    with pytest.raises(EtcdError, match="closed"):
        client.status()
    assert client._loop is None


def test_an_ipv6_endpoint_keeps_its_brackets() -> None:
    """Item 10: gRPC's target of ``[::1]:2379`` is ``[::1]:2379``, not ``::1:2379``."""
    client = EtcdClient(["[::1]:2379"])
    try:
        made = client._client("[::1]:2379")
        assert made._host == "[::1]" and made._port == 2379
    finally:
        client.close()


def test_a_password_in_tectum_toml_is_refused_even_with_the_environment(
        tectum: Callable[..., Result], make_project: Callable[..., Path]) -> None:
    """Item 15: the raw table is checked, not the value the environment overrode."""
    pw = f"canary-{secrets.token_hex(6)}"
    root = make_project('from tectum.etcd import Key\nKey("k", key="/k", value="v")\n',
                        {"tectum.toml": f'[providers.etcd]\nusername = "root"\n'
                                        f'password = "{pw}"\n'})
    result = tectum("plan", cwd=root, env={"TECTUM_PROVIDER_ETCD_PASSWORD": pw})
    assert result.returncode == 1, result.output
    assert "a password is never written in tectum.toml" in result.output, result.output
    assert pw not in result.output


def test_prefetches_of_two_reads_overlap(etcd: EtcdSpace) -> None:
    """Item 15: one read's end_read does not drop what another read's begin_read fetched."""
    client = etcd.server.client()
    client.commit({etcd.key("a"): "1", etcd.key("b"): "2"}, [])
    client.prefetch([etcd.key("a")], [])
    client.prefetch([etcd.key("b")], [])
    client.forget()
    trips = client.round_trips
    assert set(client.get_keys([etcd.key("a"), etcd.key("b")])) == {etcd.key("a"),
                                                                    etcd.key("b")}
    assert client.round_trips == trips
    client.forget()
    client.get_keys([etcd.key("a")])
    assert client.round_trips == trips + 1


def test_prefix_read_item_is_sensitive_when_its_values_hold_a_secret(
        etcd: EtcdSpace) -> None:
    """Item 1 (unit): every value read under a prefix whose values hold a secret is
    masked."""
    from tectum.masking import REDACTOR

    rt = registry.get("etcd_key_prefix")
    assert rt is not None
    secret = f"canary-{secrets.token_hex(8)}"
    REDACTOR.add(secret)
    etcd.server.put(etcd.key("s/dsn"), "someone else's value")
    found = rt.read(etcd.server.client(), [ReadItem(
        {"prefix": etcd.key("s/"), "values": {"dsn": f"u:{secret}@db"}}, None)])
    assert found[0] is not None
    assert rt.masked_observed(found[0], REDACTOR.holds_secret) == ["someone else's value"]
