"""What is specific to the S3 state backend (the rules it shares with the others are in
``test_conformance.py``, which runs on it too): the layout of objects in the bucket and of the
lock item in DynamoDB; leases judged by observation (shortened by :func:`short_lease`), a late
renewal during a takeover, which dead holders are taken over at once; the fence that keeps a
stale holder's hung PUT from landing after a takeover; clock skew; lost responses to conditional
writes (botocore ``before-send`` hooks); a pushed serial racing a commit and concurrent writers;
diagnostics for a missing bucket or table, bad settings, missing credentials, an unknown profile
and an unreachable endpoint (through the real CLI: exit 1, no traceback); two workspaces; and
``kill -9`` of an apply through the CLI losing nothing — all against the moto server
(``tests/harness/moto.py``)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import tectum.backends.s3 as s3mod
from tectum.backends.base import LockInfo
from tectum.backends.s3 import S3Backend, S3Settings, _owner
from tectum.diagnostics import DiagnosticError
from tectum.state.model import ResourceRecord, State
from tests.conftest import Result, tectum_env
from tests.engine.test_interrupts import Proj, kill_trials
from tests.harness.moto import REGION, Moto


@dataclass
class Place:
    """A bucket and a lock table of the test's own on moto."""

    bucket: str
    table: str
    key: str

    def settings(self, **extra: Any) -> S3Settings:
        return S3Settings(self.bucket, self.key, self.table, **extra)

    def toml(self, **extra: str) -> str:
        lines = ['[state]', 'backend = "s3"', f'bucket = "{self.bucket}"',
                 f'key = "{self.key}"', f'dynamodb_table = "{self.table}"',
                 *(f'{k} = "{v}"' for k, v in extra.items())]
        return "\n".join(lines) + "\n"


def _make(bucket: str | None = None, table: str | None = None) -> None:
    import boto3

    if bucket:
        boto3.client("s3").create_bucket(
            Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    if table:
        boto3.client("dynamodb").create_table(
            TableName=table, BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "LockID", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "LockID", "KeyType": "HASH"}])


@pytest.fixture
def place(moto: Moto) -> Place:
    suffix = os.urandom(4).hex()
    p = Place(f"tectum-state-{suffix}", f"tectum-locks-{suffix}", f"teams/net-{suffix}")
    _make(p.bucket, p.table)
    return p


@pytest.fixture
def opened() -> Iterator[Callable[..., S3Backend]]:
    made: list[S3Backend] = []

    def open_(settings: S3Settings, workspace: str = "default") -> S3Backend:
        backend = S3Backend(settings, workspace)
        made.append(backend)
        return backend

    yield open_
    for backend in made:
        backend.close()


def keys(bucket: str, prefix: str = "") -> list[str]:
    import boto3

    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                         Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", ())]


def rec(address: str, **attrs: Any) -> ResourceRecord:
    return ResourceRecord(address, "file", attrs, [], None)


def summary(exc: pytest.ExceptionInfo[DiagnosticError]) -> tuple[str, str]:
    d = next(iter(exc.value.diagnostics))
    return d.summary, d.detail


# -- layout -------------------------------------------------------------------------------------

def test_layout_of_versions_journal_and_lock(place: Place,
                                             opened: Callable[..., S3Backend]) -> None:
    import boto3

    backend = opened(place.settings())
    state = State.new()
    state.resources["file.a"] = rec("file.a", path="/a")
    assert backend.write(state, "apply", revision="git:abc", desired={"d": 1}) == 1
    backend.record(1, [("file.b", "create", rec("file.b", path="/b"))])
    ws = f"{place.key}/env:/default/"
    found = keys(place.bucket)
    assert f"{ws}versions/{1:020d}.json" in found and f"{ws}head.json" in found
    assert [k for k in found if k.startswith(f"{ws}desired/{1:020d}-")], found
    journal = [k for k in found if k.startswith(f"{ws}journal/{1:020d}/")]
    assert len(journal) == 1, found
    s3 = boto3.client("s3")
    version = s3.get_object(Bucket=place.bucket, Key=f"{ws}versions/{1:020d}.json")
    document = json.loads(version["Body"].read())
    assert document["serial"] == 1 and document["lineage"] == state.lineage
    assert [r["address"] for r in document["resources"]] == ["file.a"]
    meta = version["Metadata"]
    assert meta["tectum-operation"] == "apply" and meta["tectum-revision"] == "git%3Aabc"
    assert meta["tectum-lineage"] == state.lineage and meta["tectum-serial"] == "1"
    assert json.loads(s3.get_object(Bucket=place.bucket, Key=f"{ws}head.json")["Body"].read()) \
        == {"slot": 1}
    assert journal == [f"{ws}journal/{1:020d}/{1:020d}.json"]
    rows = json.loads(s3.get_object(Bucket=place.bucket, Key=journal[0])["Body"].read())
    assert rows[0][:2] == ["file.b", "create"]

    info, _ = backend.lock("apply")
    item = boto3.client("dynamodb").get_item(
        TableName=place.table, ConsistentRead=True,
        Key={"LockID": {"S": f"{place.bucket}/{place.key}/env:/default"}})["Item"]
    assert item["Id"]["S"] == info.id
    assert LockInfo(**json.loads(item["Info"]["S"])) == info
    assert len(item["Rvn"]["S"]) == 32 and float(item["Lease"]["N"]) == 60
    assert json.loads(item["Owner"]["S"]) == _owner()
    # the next write folds the journal into version 2 and deletes it
    assert backend.write(backend.read(), "apply") == 2
    assert not keys(place.bucket, f"{ws}journal/")
    assert backend.unlock(info.id)
    assert "Item" not in boto3.client("dynamodb").get_item(
        TableName=place.table, Key={"LockID": {"S": f"{place.bucket}/{place.key}/env:/default"}})


def test_a_stale_head_hint_is_not_trusted(place: Place,
                                          opened: Callable[..., S3Backend]) -> None:
    """``head.json`` lags behind (a writer killed before moving it) or is damaged: the latest
    version is still found by listing after it."""
    import boto3

    backend = opened(place.settings())
    for _ in range(3):
        backend.write(backend.read(), "apply")
    head = f"{place.key}/env:/default/head.json"
    s3 = boto3.client("s3")
    for body in (b'{"slot": 1}', b"not json", b'{"slot": 99}'):
        s3.put_object(Bucket=place.bucket, Key=head, Body=body)
        assert opened(place.settings()).read().serial == 3
    assert backend.write(backend.read(), "apply") == 4


# -- locks --------------------------------------------------------------------------------------

#: the lease and heartbeat of tests that wait for a lease to run out (seconds)
SHORT_LEASE, SHORT_HEARTBEAT = 2.0, 0.2


@pytest.fixture
def short_lease(monkeypatch: pytest.MonkeyPatch) -> float:
    """Backends opened from now on hold leases of :data:`SHORT_LEASE` seconds."""
    monkeypatch.setattr(s3mod, "LEASE", SHORT_LEASE)
    monkeypatch.setattr(s3mod, "HEARTBEAT", SHORT_HEARTBEAT)
    return SHORT_LEASE


def lock_item(place: Place) -> dict[str, Any]:
    import boto3

    got: dict[str, Any] = boto3.client("dynamodb").get_item(
        TableName=place.table, ConsistentRead=True,
        Key={"LockID": {"S": f"{place.bucket}/{place.key}/env:/default"}})
    return dict(got.get("Item") or {})


def _foreign_lock(place: Place, *, host: str = "elsewhere", pid: int = 4242,
                  owner: dict[str, Any] | None = None, lease: float = 60.0) -> LockInfo:
    """A lock item as a run on another machine (or in another container) leaves it."""
    import boto3

    info = LockInfo("f" * 32, "apply", f"ops@{host}", host, pid, "0.9", time.time())
    boto3.client("dynamodb").put_item(TableName=place.table, Item={
        "LockID": {"S": f"{place.bucket}/{place.key}/env:/default"}, "Id": {"S": info.id},
        "Info": {"S": json.dumps(info._asdict())}, "Rvn": {"S": os.urandom(16).hex()},
        "Lease": {"N": repr(lease)},
        "Owner": {"S": json.dumps(owner or {"boot_id": "b" * 36, "pid_ns": "pid:[1]",
                                            "start": "1"})}})
    return info


def _renew_foreign(place: Place) -> None:
    import boto3

    boto3.client("dynamodb").update_item(
        TableName=place.table, Key={"LockID": {"S": f"{place.bucket}/{place.key}/env:/default"}},
        UpdateExpression="SET Rvn = :r", ExpressionAttributeValues={
            ":r": {"S": os.urandom(16).hex()}})


def test_lock_of_another_machine_holds_while_it_is_renewed(
        place: Place, opened: Callable[..., S3Backend], short_lease: float) -> None:
    """The lease is judged by observation (as the Amazon DynamoDB lock client does): a holder
    whose renewal version changes keeps its lock however long a taker waits; one whose version
    stays the same for its whole lease (on the taker's own clock) is taken over."""
    held = _foreign_lock(place, lease=short_lease)
    backend = opened(place.settings())
    with pytest.raises(DiagnosticError) as exc:
        backend.lock("apply")
    title, detail = summary(exc)
    assert title == "State is locked" and "pid 4242 on elsewhere" in detail and held.id in detail
    assert f"--lock-timeout {short_lease + 10:g}s" in detail
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(short_lease / 6):
            _renew_foreign(place)

    renewer = threading.Thread(target=renew)
    renewer.start()
    try:
        with pytest.raises(DiagnosticError) as exc:
            backend.lock("apply", timeout=short_lease * 1.25)
        assert summary(exc)[0] == "State is locked"
    finally:
        stop.set()
        renewer.join()
    start = time.monotonic()  # no renewal any more: taken over one lease after it was seen
    info, warning = backend.lock("apply", timeout=short_lease * 3)
    assert short_lease <= time.monotonic() - start < short_lease * 2.5
    assert warning is not None and held.id in warning and "taken over" in warning
    assert backend.unlock(info.id)


def test_a_renewal_landing_during_a_takeover_keeps_the_lock(
        place: Place, opened: Callable[..., S3Backend], short_lease: float) -> None:
    """The takeover is conditional on the renewal version the taker watched: a late renewal
    of the holder that lands between the taker's read and its write makes it fail."""
    holder = opened(place.settings())
    info, _ = holder.lock("apply")
    holder.storage._stop_heartbeat()  # (its renewals stall ...)
    taker = opened(place.settings())
    _, ddb = taker.storage._clients()
    late: list[str] = []

    def renew_late(request: Any, **_: Any) -> None:
        if not late and b"Rvn = :rvn" in request.body:  # (the takeover's PutItem)
            holder.storage._renew(info.id)  # (... and one lands now)
            late.append(info.id)

    ddb.meta.events.register("before-send.dynamodb.PutItem", renew_late)
    with pytest.raises(DiagnosticError) as exc:
        taker.lock("apply", timeout=short_lease * 1.3)
    assert late and summary(exc)[0] == "State is locked" and info.id in summary(exc)[1]
    assert taker.lock_info() == info
    assert holder.write(State.new(), "apply") == 1  # the holder still holds it
    assert holder.unlock(info.id)


def test_only_a_dead_process_of_this_boot_and_pid_namespace_is_taken_over_at_once(
        place: Place, opened: Callable[..., S3Backend]) -> None:
    """Host name and PID prove nothing (containers with the host's network, cloned machines
    share host names): the boot ID and PID namespace must match too, else the lease decides."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    here, mine = os.uname().nodename, _owner()
    backend = opened(place.settings())
    for other in ({**mine, "boot_id": "0" * 36}, {**mine, "pid_ns": "pid:[1]"}):
        _foreign_lock(place, host=here, pid=gone.pid, owner=other)
        with pytest.raises(DiagnosticError) as exc:
            backend.lock("apply")
        assert summary(exc)[0] == "State is locked"
    with subprocess.Popen(["sleep", "30"]) as alive:
        try:  # a live process of this boot: held — unless its PID was reused since
            _foreign_lock(place, host=here, pid=alive.pid,
                          owner={**mine, "start": s3mod._proc_start(alive.pid)})
            with pytest.raises(DiagnosticError):
                backend.lock("apply")
            held = _foreign_lock(place, host=here, pid=alive.pid, owner={**mine, "start": "1"})
            info, warning = backend.lock("apply")
            assert warning is not None and held.id in warning
            assert backend.unlock(info.id)
        finally:
            alive.kill()
    held = _foreign_lock(place, host=here, pid=gone.pid, owner={**mine, "start": "1"})
    info, warning = backend.lock("apply")
    assert warning is not None and held.id in warning
    assert backend.unlock(info.id)


def test_heartbeat_renews_the_lease(place: Place, opened: Callable[..., S3Backend],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3mod, "HEARTBEAT", 0.2)
    backend = opened(place.settings())
    info, _ = backend.lock("apply")
    first = lock_item(place)["Rvn"]["S"]
    deadline = time.monotonic() + 15
    while lock_item(place)["Rvn"]["S"] == first:
        assert time.monotonic() < deadline, "the lease was not renewed"
        time.sleep(0.05)
    assert backend.unlock(info.id)


def _partition(backend: S3Backend) -> threading.Event:
    """An event that, while set, keeps ``backend``'s renewals from reaching DynamoDB."""
    from botocore.exceptions import ConnectTimeoutError

    cut = threading.Event()

    def drop(request: Any, **_: Any) -> None:
        if cut.is_set():
            raise ConnectTimeoutError(endpoint_url=request.url)

    backend.storage._clients()[1].meta.events.register("before-send.dynamodb.UpdateItem", drop)
    return cut


def test_a_stale_holder_stores_nothing_after_a_takeover(
        place: Place, opened: Callable[..., S3Backend], short_lease: float) -> None:
    """The fence: a holder whose renewals no longer get through has its version PUT hang (the
    attempt times out) while its lease runs out and another run takes the lock, records
    ``file.b`` and is killed. botocore's retry of the PUT is not sent — the lease no longer
    outlasts a request by this process's monotonic clock — so no version stored behind the new
    holder's back deletes its journal; and the old holder stores nothing more."""
    from botocore.exceptions import ReadTimeoutError

    old = opened(place.settings())
    old_info, _ = old.lock("apply")
    state = old.read()
    state.resources["file.a"] = rec("file.a", v=1)
    assert old.write(state, "apply") == 1
    cut = _partition(old)
    s3, _ = old.storage._clients()
    taken: list[str | None] = []

    def hang(request: Any, **_: Any) -> None:
        if taken or "/versions/" not in request.url:
            return
        cut.set()
        new = opened(place.settings())
        _, warning = new.lock("apply", timeout=short_lease * 3)
        taken.append(warning)
        latest = new.read()
        new.record(latest.serial, [("file.b", "create", rec("file.b", v=1))])
        new.storage._stop_heartbeat()  # (and it is killed)
        new.storage._lock_id = None
        cut.clear()
        raise ReadTimeoutError(endpoint_url=request.url)

    s3.meta.events.register("before-send.s3.PutObject", hang)
    state = old.read()
    state.resources["file.a"] = rec("file.a", v=2)
    with pytest.raises(DiagnosticError) as exc:
        old.write(state, "apply")
    assert summary(exc)[0] == "State lock lost"
    assert taken and taken[0] is not None and "taken over" in taken[0]
    for call in (lambda: old.record(1, [("file.c", "create", rec("file.c"))]),
                 lambda: old.delete_workspace("staging")):  # nothing more is stored
        with pytest.raises(DiagnosticError) as exc:
            call()
        assert summary(exc)[0] == "State lock lost"
    assert old.unlock(old_info.id) is False
    reader = opened(place.settings())
    assert [v.serial for v in reader.history()] == [1]
    latest = reader.read()
    assert sorted(latest.resources) == ["file.a", "file.b"]
    assert latest.resources["file.a"].attributes == {"v": 1}


def test_clock_skew_neither_reorders_the_journal_nor_takes_a_live_lock(
        place: Place, opened: Callable[..., S3Backend], monkeypatch: pytest.MonkeyPatch) -> None:
    """Host A records ``file.a`` and is force-unlocked; host B, whose clock is 2 minutes
    behind, takes the lock and records its deletion: the journal keeps B's record last (its
    order is the order of the conditional writes, not of the clocks), and host C with a right
    clock does not take B's live lock (no clocks are compared)."""
    a = opened(place.settings())
    base = a.write(State.new(), "apply")
    info, _ = a.lock("apply")
    a.record(base, [("file.a", "create", rec("file.a", v=1))])
    b = opened(place.settings())
    b.force_unlock(info.id)
    real = time.time
    with monkeypatch.context() as m:
        skewed = type("Skewed", (), {k: staticmethod(getattr(time, k)) for k in dir(time)
                                     if not k.startswith("_") and callable(getattr(time, k))})
        skewed.time = staticmethod(lambda: real() - 120)  # type: ignore[attr-defined]
        skewed.time_ns = staticmethod(  # type: ignore[attr-defined]
            lambda: time.time_ns() - 120 * 10**9)
        m.setattr(s3mod, "time", skewed)
        b_info, _ = b.lock("apply")
        assert b.read().resources["file.a"].attributes == {"v": 1}
        b.record(base, [("file.a", "delete", None)])
    c = opened(place.settings())
    assert c.read().resources == {}
    with pytest.raises(DiagnosticError) as exc:
        c.lock("apply")
    assert summary(exc)[0] == "State is locked" and b_info.id in summary(exc)[1]
    assert b.unlock(b_info.id)


def test_a_lost_response_to_a_conditional_write_is_recognised(
        place: Place, opened: Callable[..., S3Backend]) -> None:
    """A conditional request whose first attempt lands but whose response is lost: botocore's
    retry then fails its condition, and the backend tells its own write (a write ID, the lock
    ID) from another writer's — for the lock, a version, a journal object and the deletes."""
    backend = opened(place.settings())
    s3, ddb = backend.storage._clients()
    fired = lose_first_response(ddb, "dynamodb.PutItem")
    info, warning = backend.lock("apply")
    assert fired and warning is None and backend.lock_info() == info
    assert backend.write(State.new(), "apply", desired={"a": 1}) == 1
    state = backend.read()
    state.resources["file.a"] = rec("file.a")
    fired = lose_first_response(s3, "s3.PutObject", lambda r: "/versions/" in r.url)
    assert backend.write(state, "apply", desired={"a": 2}) == 2
    assert fired and [v.serial for v in backend.history()] == [1, 2]
    assert backend.read_version(2)[1] == {"a": 2}
    fired = lose_first_response(s3, "s3.PutObject", lambda r: "/journal/" in r.url)
    backend.record(2, [("file.b", "create", rec("file.b"))])
    assert fired and len(keys(place.bucket, f"{place.key}/env:/default/journal/")) == 1
    assert sorted(backend.read().resources) == ["file.a", "file.b"]
    fired = lose_first_response(ddb, "dynamodb.DeleteItem")
    assert backend.unlock(info.id) is True and fired and backend.lock_info() is None
    info, _ = backend.lock("apply")
    other = opened(place.settings())
    fired = lose_first_response(other.storage._clients()[1], "dynamodb.DeleteItem")
    other.force_unlock(info.id)
    assert fired and other.lock_info() is None


def lose_first_response(client: Any, event: str,
                        when: Callable[[Any], bool] = lambda request: True) -> list[str]:
    """Make the first attempt of ``event`` (``"s3.PutObject"``...) that ``when`` accepts reach
    the server but lose its response (a botocore ``before-send`` hook sends it, then raises
    ``ConnectionClosedError``, which botocore retries). Returns a list that gets its URL."""
    import urllib.request

    from botocore.exceptions import ConnectionClosedError

    fired: list[str] = []

    def hook(request: Any, **_: Any) -> None:
        if fired or not when(request):
            return
        fired.append(request.url)
        body = request.body
        if hasattr(body, "read"):
            where = body.tell()
            body, _ = body.read(), body.seek(where)
        headers = {k: v.decode() if isinstance(v, bytes) else v
                   for k, v in request.headers.items() if k.lower() != "expect"}
        with urllib.request.urlopen(urllib.request.Request(
                request.url, data=body, method=request.method, headers=headers),
                timeout=30) as resp:
            resp.read()
        raise ConnectionClosedError(endpoint_url=request.url)

    client.meta.events.register(f"before-send.{event}", hook)
    return fired


def test_concurrent_writers_never_share_a_serial(place: Place,
                                                 opened: Callable[..., S3Backend]) -> None:
    """Without the lock (a bug, or ``state push`` racing an apply) two writers still store
    distinct serials: the version PUT is conditional (``If-None-Match: *``)."""
    backends = [opened(place.settings()) for _ in range(4)]
    stored: list[int] = []
    errors: list[BaseException] = []

    def write(b: S3Backend, n: int) -> None:
        try:
            for i in range(5):
                state = State.new()
                state.resources[f"file.w{n}_{i}"] = rec(f"file.w{n}_{i}")
                stored.append(b.write(state, "apply"))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(b, n)) for n, b in enumerate(backends)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sorted(stored) == list(range(1, 21))
    history = backends[0].history()
    assert [v.serial for v in history] == list(range(1, 21))
    for v in history:
        state, _ = backends[0].read_version(v.serial)
        assert state.serial == v.serial and len(state.resources) == 1


def test_a_commit_never_lands_below_a_higher_serial(place: Place,
                                                    opened: Callable[..., S3Backend]) -> None:
    """Serials can jump (a pushed state keeps its higher serial): B pushes serial 101 while A,
    which read latest = 5, stores — A's commit competes for the same slot (latest + 1), so it
    reads again and stores 102 on top instead of 6 hidden below 101."""
    a, b = opened(place.settings()), opened(place.settings())
    for _ in range(5):
        a.write(a.read(), "apply")
    pushed: list[int] = []

    def race(request: Any, **_: Any) -> None:
        if not pushed and "/versions/" in request.url:
            state = b.read()
            state.serial = 100
            pushed.append(b.push(state))

    a.storage._clients()[0].meta.events.register("before-send.s3.PutObject", race)
    mine = a.read()
    mine.resources["file.a"] = rec("file.a")
    assert a.write(mine, "apply") == 102 and pushed == [101]
    assert [v.serial for v in a.history()] == [1, 2, 3, 4, 5, 101, 102]
    latest = opened(place.settings()).read()
    assert latest.serial == 102 and list(latest.resources) == ["file.a"]
    assert a.read_version(101)[0].serial == 101 and a.read_version(3)[0].serial == 3
    with pytest.raises(DiagnosticError) as exc:
        a.read_version(6)
    assert summary(exc)[0] == "No such state version"
    keys_now = keys(place.bucket, f"{place.key}/env:/default/versions/")
    assert [k.rsplit("/", 1)[1] for k in keys_now] == [f"{n:020d}.json" for n in range(1, 8)]


def test_delete_workspace_checks_the_lock(place: Place,
                                          opened: Callable[..., S3Backend]) -> None:
    staging = opened(place.settings(), "staging")
    staging.write(State.new(), "apply")
    holder = opened(place.settings())
    info, _ = holder.lock("apply")
    opened(place.settings()).force_unlock(info.id)
    with pytest.raises(DiagnosticError) as exc:
        holder.delete_workspace("staging")
    assert summary(exc)[0] == "State lock lost"
    assert holder.workspaces() == ["default", "staging"] and staging.read().serial == 1


def test_unknown_profile_from_the_environment_is_named(place: Place, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from tectum.backends.s3 import S3Storage

    empty = tmp_path / "aws-config"
    empty.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_PROFILE", "nosuch-profile")
    with pytest.raises(DiagnosticError) as exc:
        S3Storage(place.settings())._clients()
    title, detail = summary(exc)
    assert title == "Unknown AWS profile" and "'nosuch-profile'" in detail
    assert "AWS_PROFILE" in detail and "unset AWS_PROFILE" in detail and "None" not in detail


# -- settings and faults ------------------------------------------------------------------------

STACK = """\
from tectum.host import File

W = {world!r}
for i in range({n}):
    File(f"f{{i}}", path=f"{{W}}/f{{i}}.txt", content=f"{{i}}\\n")
"""


@pytest.fixture
def project(tmp_path: Path) -> Callable[..., Path]:
    def make(toml: str, n: int = 3) -> Path:
        root, world = tmp_path / "proj", tmp_path / "world"
        root.mkdir(exist_ok=True)
        world.mkdir(exist_ok=True)
        (root / "stack.py").write_text(STACK.format(world=str(world), n=n))
        (root / "tectum.toml").write_text(toml)
        return root
    return make


def run(tectum: Callable[..., Result], root: Path, *args: str,
        env: dict[str, str]) -> Result:
    return tectum(*args, cwd=root, env=env, timeout=120)


def failed(res: Result, title: str) -> str:
    assert res.returncode == 1, res.output
    assert title in res.output, res.output
    assert "Traceback" not in res.output, res.output
    return res.output


def test_cli_apply_workspaces_and_force_unlock(place: Place, moto: Moto, project: Any,
                                               tectum: Callable[..., Result]) -> None:
    root = project(place.toml())
    env = moto.env()
    res = run(tectum, root, "apply", "--auto-approve", env=env)
    assert res.returncode == 0, res.output
    plan = run(tectum, root, "plan", env=env)
    assert plan.returncode == 0 and "No changes." in plan.stdout, plan.output
    assert run(tectum, root, "state", "list", env=env).stdout.split() == \
        ["file.f0", "file.f1", "file.f2"]
    # a second workspace: its own prefix, its own state
    assert run(tectum, root, "workspace", "new", "staging", env=env).returncode == 0
    res = run(tectum, root, "state", "list", env=env)
    assert res.returncode == 0 and res.stdout.split() == [], res.output
    listed = run(tectum, root, "workspace", "list", env=env).stdout.split()
    assert listed == ["default", "*", "staging"], listed
    prefixes = {k.split("/env:/")[1].split("/")[0] for k in keys(place.bucket, place.key)}
    assert prefixes == {"default", "staging"}
    assert run(tectum, root, "workspace", "select", "default", env=env).returncode == 0
    # a lock left by a run on another machine: named, and released by force-unlock
    held = _foreign_lock(place)
    out = failed(run(tectum, root, "apply", "--auto-approve", env=env), "State is locked")
    assert held.id in out and "elsewhere" in out
    res = run(tectum, root, "force-unlock", held.id, env=env)
    assert res.returncode == 0, res.output
    history = run(tectum, root, "state", "history", env=env)
    assert history.returncode == 0 and "apply" in history.stdout, history.output


def test_missing_bucket_and_table(moto: Moto, project: Any,
                                  tectum: Callable[..., Result]) -> None:
    """One message names all there is to make, with the commands that make it."""
    suffix = os.urandom(4).hex()
    place = Place(f"tectum-none-{suffix}", f"tectum-none-{suffix}", "k")
    root = project(place.toml())
    out = failed(run(tectum, root, "plan", env=moto.env()),
                 "State bucket and lock table not found")
    assert f"aws s3api create-bucket --bucket {place.bucket} --region {REGION}" in out
    assert f"LocationConstraint={REGION}" in out and "put-bucket-versioning" in out
    assert f"--table-name {place.table}" in out and "AttributeName=LockID" in out
    _make(table=place.table)
    out = failed(run(tectum, root, "plan", env=moto.env()), "State bucket not found")
    assert "create-table" not in out and "create-bucket" in out
    root = project(Place(place.bucket, f"tectum-other-{suffix}", "k").toml())
    _make(bucket=place.bucket)
    out = failed(run(tectum, root, "plan", env=moto.env()), "State lock table not found")
    assert "create-bucket" not in out and f"--table-name tectum-other-{suffix}" in out


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_bad_settings_credentials_and_endpoint(place: Place, moto: Moto, project: Any,
                                               tectum: Callable[..., Result],
                                               tmp_path: Path) -> None:
    env = moto.env()
    # settings: required ones missing; credentials refused (and never echoed)
    root = project('[state]\nbackend = "s3"\nkey = "k"\n')
    out = failed(run(tectum, root, "plan", env=env), "Invalid S3 state settings")
    assert "bucket is required" in out
    root = project(place.toml() + 'secret_key = "hunter2hunter2"\n')
    out = failed(run(tectum, root, "plan", env=env), "Invalid S3 state settings")
    assert "secret_key cannot be set here" in out and "hunter2" not in out
    root = project(place.toml())
    # no credentials anywhere
    empty = tmp_path / "aws-empty"
    empty.write_text("")
    bare = {"AWS_ENDPOINT_URL": moto.url, "AWS_REGION": REGION,
            "AWS_SHARED_CREDENTIALS_FILE": str(empty), "AWS_CONFIG_FILE": str(empty),
            "AWS_EC2_METADATA_DISABLED": "true"}
    out = failed(run(tectum, root, "plan", env=bare), "No AWS credentials")
    assert "AWS_ACCESS_KEY_ID" in out
    out = failed(run(tectum, root, "plan", env={**bare, **{k: v for k, v in env.items()
                                                           if k.startswith("AWS_ACCESS")
                                                           or k.startswith("AWS_SECRET")},
                                               "AWS_REGION": ""}), "No AWS region")
    root = project(place.toml(profile="nosuch"))
    out = failed(run(tectum, root, "plan", env={**env, "AWS_CONFIG_FILE": str(empty)}),
                 "Unknown AWS profile")
    assert "'nosuch'" in out
    # an endpoint nobody listens on
    port = _closed_port()
    root = project(place.toml(endpoint_url=f"http://127.0.0.1:{port}"))
    start = time.monotonic()
    out = failed(run(tectum, root, "plan", env={**env, "AWS_MAX_ATTEMPTS": "1"}),
                 "Cannot reach the state store")
    assert f"http://127.0.0.1:{port}" in out and time.monotonic() - start < 30
    assert "testing" not in out.replace("tectum", "")  # (the fake secret is "testing")


def test_import_is_lazy() -> None:
    code = ("import sys, tectum.backends.s3 as s, tectum.backends.factory; "
            "s.S3Backend(s.S3Settings('b', 'k', 't')); assert 'boto3' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- kill -9 through the CLI ---------------------------------------------------------------------

@dataclass
class S3Proj(Proj):
    """:class:`tests.engine.test_interrupts.Proj` whose runs reach moto."""

    env: dict[str, str] = field(default_factory=dict)

    def run(self, *args: str) -> Result:
        return self.tectum(*args, cwd=self.root, env=self.env)

    def read_state(self) -> tuple[set[str], set[str]]:
        """As :meth:`Proj.read_state`, through ``tectum state pull`` (the state is in moto,
        which only the runs' environment reaches)."""
        doc = json.loads(self.ok("state", "pull").stdout)
        return ({r["address"] for r in doc["resources"]},
                {r["attributes"]["path"] for r in doc["resources"] if r["type"] == "file"})

    def start(self, *args: str, name: str) -> subprocess.Popen[bytes]:
        with open(self.logs / f"{name}.log", "wb") as fh:
            proc = subprocess.Popen([sys.executable, "-m", "tectum", *args], cwd=self.root,
                                    env=tectum_env(self.env), stdin=subprocess.DEVNULL,
                                    stdout=fh, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.started.append(proc)
        return proc


@pytest.fixture
def s3_proj(tmp_path: Path, place: Place, moto: Moto,
            tectum: Callable[..., Result]) -> Iterator[S3Proj]:
    root, world, logs = tmp_path / "proj", tmp_path / "world", tmp_path / "logs"
    for d in (root, world, logs):
        d.mkdir()
    (root / "tectum.toml").write_text(place.toml())
    p = S3Proj(root, world, logs, tectum, env=moto.env())
    yield p
    for proc in p.started:
        p.reap(proc)


def test_kill_9_of_an_apply_loses_nothing(s3_proj: S3Proj, place: Place) -> None:
    """``kill -9`` of an apply at random moments (the trials of the engine's interrupt tests:
    the next plan and apply reconcile, every file on disk is in state and every file in state
    is on disk); then the killed run's lock item is taken over, not left behind."""
    stats = kill_trials(s3_proj, trials=3, seed=314, plan_first=True)
    assert stats.killed_during_run >= 2, stats
    assert not keys(place.bucket, f"{place.key}/env:/default/journal/"), \
        "the last apply folded every journal into its version"


@pytest.mark.slow
def test_kill_9_of_an_apply_loses_nothing_10_trials(s3_proj: S3Proj, place: Place) -> None:
    stats = kill_trials(s3_proj, trials=10, seed=2718, plan_first=False)
    assert stats.killed_during_run >= 5, stats


def test_kill_9_while_holding_the_lock_is_taken_over(s3_proj: S3Proj, place: Place) -> None:
    s3_proj.write(textwrap.dedent("""\
        from tectum.host import Command
        Command("slow", command=["sleep", "30"])
    """))
    run = s3_proj.start("apply", "--auto-approve", name="held")
    backend = S3Backend(place.settings())
    try:
        deadline = time.monotonic() + 30
        while (held := backend.lock_info()) is None:
            assert run.poll() is None and time.monotonic() < deadline, s3_proj.log("held")
            time.sleep(0.05)
        os.kill(run.pid, signal.SIGKILL)
        run.wait(timeout=30)
        assert held.pid == run.pid
    finally:
        backend.close()
    s3_proj.write("")
    plan = s3_proj.run("plan")
    assert plan.returncode == 0, plan.output
    assert "Stale lock taken over" in plan.output
    assert held.id in plan.output and f"pid {run.pid} on" in plan.output
    assert S3Backend(place.settings()).lock_info() is None, "the plan released the lock"


@pytest.mark.parametrize("code, title", [
    ("InvalidAccessKeyId", "AWS denied access to the state"),
    ("AccessDenied", "AWS denied access to the state"),
    ("UnrecognizedClientException", "AWS denied access to the state"),
    ("SlowDown", "State store error"),
])
def test_refusals_moto_does_not_make(code: str, title: str) -> None:
    """moto accepts any credentials and never throttles for long: the diagnostics for what AWS
    refuses, from the error boto3 raises (botocore's own ``ClientError``)."""
    from botocore.exceptions import ClientError

    from tectum.backends.s3 import S3Storage

    storage = S3Storage(S3Settings("acme-state", "net", "locks", region=REGION))
    exc = ClientError({"Error": {"Code": code, "Message": "The key is wrong."}}, "GetObject")
    d = next(iter(storage._service_error(exc, "s3").diagnostics))
    assert d.summary == title and code in d.detail
    assert "s3://acme-state/net/env:/default/" in d.detail
