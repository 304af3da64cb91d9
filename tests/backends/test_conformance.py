"""The state backend conformance suite: every backend keeps the rules of
:mod:`tectum.backends.base`, tested the same way on each (``store`` is parameterized over the
embedded SQLite file, a PostgreSQL database of the test's own, and an S3 bucket with a DynamoDB
lock table of the test's own on the moto server). Each backend is the state
manager (:mod:`tectum.state.manager`, the rules) over its own storage, so this suite tests both
the rules and that each storage gives them what they need (snapshots, one transaction for a
check and the write it allows).

Locks are tested across real processes: a worker subprocess (``WORKER`` below) opens its own
backend object on the same store and takes, holds, releases the lock on command, or is killed
with SIGKILL while holding it. Where a backend cannot do something by design (SQLite cannot
take a lock from a live holder), the test states the expected difference; a known deviation of
a backend from the rules is marked ``xfail(strict=True)`` with the reason, so that fixing it
shows up (there is none today: never a non-strict or run-time ``pytest.xfail``, which would
pass whichever way the rule goes).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tectum.backends.base import Intent, LockInfo, StateBackend
from tectum.diagnostics import Diagnostic, DiagnosticError
from tectum.state.model import FORMAT_VERSION, ResourceRecord, State

WORKER = r"""
import json, os, sys, time
spec = json.loads(sys.argv[1])
if spec["kind"] == "sqlite":
    from tectum.backends.sqlite import SQLiteBackend as Backend
elif spec["kind"] == "s3":
    from tectum.backends.s3 import S3Backend, S3Settings

    def Backend(target, workspace):
        return S3Backend(S3Settings(**json.loads(target)), workspace)
else:
    from tectum.backends.postgres import PostgresBackend as Backend
from tectum.backends.base import Intent
from tectum.diagnostics import DiagnosticError
from tectum.state.model import ResourceRecord

backend = Backend(spec["target"], spec["workspace"])

def reply(**kw):
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()

backend.lock_info()  # connected (and the schema made) before anything is timed
reply(ok=True, pid=os.getpid())
for line in sys.stdin:
    cmd = json.loads(line)
    op = cmd["op"]
    started = None
    try:
        if op == "lock":
            at = cmd.get("at")
            if at is not None:  # sleep to about 2 ms before the start time, then spin
                while (left := at - time.time()) > 0.002:
                    time.sleep(left - 0.002)
                while time.time() < at:
                    pass
            started = time.time()
            info, warning = backend.lock("apply", timeout=cmd.get("timeout", 0.0))
            reply(ok=True, started=started, info=info._asdict(), warning=warning)
        elif op == "slow_lock":  # a winner slowed down just after its flock succeeds
            import fcntl

            paused = []

            def pause(frame, event, arg):
                if event == "c_return" and arg is fcntl.flock and not paused \
                        and frame.f_code.co_name == "lock":
                    paused.append(True)
                    reply(paused=True)
                    time.sleep(cmd["pause"])

            sys.setprofile(pause)
            try:
                info, warning = backend.lock("apply")
            finally:
                sys.setprofile(None)
            reply(ok=True, info=info._asdict(), warning=warning)
        elif op == "unlock":
            time.sleep(cmd.get("delay", 0.0))
            reply(ok=True, released=backend.unlock(cmd["id"]))
        elif op == "journal":
            backend.intend(cmd["base"], [Intent(*i) for i in cmd["intents"]])
            backend.record(cmd["base"], [
                (a, act, ResourceRecord.from_json(r) if r is not None else None)
                for a, act, r in cmd["records"]])
            reply(ok=True)
        elif op == "write":
            reply(ok=True, serial=backend.write(backend.read(), "apply"))
        elif op == "exit":
            reply(ok=True)
            break
    except DiagnosticError as exc:
        diag = next(iter(exc.diagnostics))
        reply(ok=False, started=started, summary=diag.summary, detail=diag.detail)
"""


class Worker:
    """A subprocess with its own backend object on the same store, driven by JSON lines."""

    def __init__(self, spec: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        self._fd = self.proc.stdout.fileno()
        self._buf = b""
        self.pid = int(self.recv()["pid"])

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd).encode() + b"\n")
        self.proc.stdin.flush()

    def recv(self, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"worker {self.proc.pid} did not answer in {timeout} s")
            ready, _, _ = select.select([self._fd], [], [], left)
            if ready:
                chunk = os.read(self._fd, 65536)
                if not chunk:
                    raise AssertionError(f"worker {self.proc.pid} exited "
                                         f"(rc {self.proc.wait()}); see its stderr")
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def call(self, **cmd: Any) -> dict[str, Any]:
        self.send(**cmd)
        return self.recv()

    def lock(self) -> LockInfo:
        reply = self.call(op="lock")
        assert reply["ok"], reply
        return LockInfo(**reply["info"])

    def kill(self) -> None:
        """SIGKILL, by the child's own pid."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
        with contextlib.suppress(Exception):
            assert self.proc.stdout is not None
            self.proc.stdout.close()


class Store:
    """One state store reached by several backend objects and worker processes. ``target``:
    the SQLite file, the PostgreSQL DSN, or the JSON of the :class:`S3Settings`. The damage
    helpers (``set_document`` ...) change the store directly, as an operator would: SQL on the
    ``states`` and ``journal`` tables, or the objects of the S3 layout."""

    def __init__(self, kind: str, target: str) -> None:
        self.kind = kind
        self.target = target
        self._opened: list[StateBackend] = []
        self._workers: list[Worker] = []

    def open(self, workspace: str = "default") -> StateBackend:
        backend: StateBackend
        if self.kind == "sqlite":
            from tectum.backends.sqlite import SQLiteBackend

            backend = SQLiteBackend(self.target, workspace)
        elif self.kind == "s3":
            from tectum.backends.s3 import S3Backend, S3Settings

            backend = S3Backend(S3Settings(**json.loads(self.target)), workspace)
        else:
            from tectum.backends.postgres import PostgresBackend

            backend = PostgresBackend(self.target, workspace)
        self._opened.append(backend)
        return backend

    def worker(self, workspace: str = "default") -> Worker:
        worker = Worker({"kind": self.kind, "target": self.target, "workspace": workspace})
        self._workers.append(worker)
        return worker

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run SQL on the store directly (qmark parameters), as an operator would."""
        if self.kind == "sqlite":
            with contextlib.closing(sqlite3.connect(self.target)) as db, db:
                return db.execute(query, params).fetchall()
        import psycopg

        with psycopg.connect(self.target, autocommit=True) as conn:
            cur = conn.execute(query.replace("?", "%s"), params)
            return cur.fetchall() if cur.description else []

    # -- direct changes (S3: the objects of the layout in tectum.backends.s3) --------------
    def _s3(self) -> tuple[Any, str, str]:
        """A boto3 S3 client, the bucket, and the default workspace's prefix."""
        import boto3

        settings = json.loads(self.target)
        return (boto3.client("s3"), settings["bucket"],
                f"{settings['key']}/env:/default/")

    def _s3_keys(self, under: str) -> list[str]:
        client, bucket, prefix = self._s3()
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                 Prefix=prefix + under)
        return [o["Key"] for page in pages for o in page.get("Contents", ())]

    def _s3_version(self, serial: int) -> str:
        # (versions/SLOT.json: the slot is the serial here, as no test pushes a higher serial)
        return f"{self._s3()[2]}versions/{serial:020d}.json"

    def document(self, serial: int) -> str:
        """The stored document of version ``serial`` (default workspace)."""
        if self.kind != "s3":
            return str(self.sql("SELECT document FROM states WHERE serial = ?", serial)[0][0])
        client, bucket, _ = self._s3()
        body: bytes = client.get_object(Bucket=bucket, Key=self._s3_version(serial))["Body"].read()
        return body.decode()

    def set_document(self, text: str, serial: int | None = None) -> None:
        """Overwrite the document of version ``serial`` (every version when None)."""
        if self.kind != "s3":
            if serial is None:
                self.sql("UPDATE states SET document = ?", text)
            else:
                self.sql("UPDATE states SET document = ? WHERE serial = ?", text, serial)
            return
        client, bucket, _ = self._s3()
        keys = [k for k in self._s3_keys("versions/")
                if serial is None or k == self._s3_version(serial)]
        assert keys
        for key in keys:  # (the metadata is kept: only the body is damaged)
            meta = client.head_object(Bucket=bucket, Key=key)["Metadata"]
            client.put_object(Bucket=bucket, Key=key, Body=text.encode(), Metadata=meta)

    def set_desired(self, text: str) -> None:
        """Overwrite every stored desired state."""
        if self.kind != "s3":
            self.sql("UPDATE states SET desired = ?", text)
            return
        client, bucket, _ = self._s3()
        keys = self._s3_keys("desired/")
        assert keys
        for key in keys:
            client.put_object(Bucket=bucket, Key=key, Body=text.encode())

    def set_journal_records(self, text: str) -> None:
        """Overwrite the record of every journal row."""
        if self.kind != "s3":
            self.sql("UPDATE journal SET record = ?", text)
            return
        client, bucket, _ = self._s3()
        keys = self._s3_keys("journal/")
        assert keys
        for key in keys:
            rows = json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
            client.put_object(Bucket=bucket, Key=key, Body=json.dumps(
                [[address, action, text] for address, action, _ in rows]).encode())

    def add_journal_row(self, base: int, address: str, action: str, record: str) -> None:
        """Add one row to the default workspace's journal on version ``base``."""
        if self.kind != "s3":
            self.sql("INSERT INTO journal (workspace, base_serial, address, action, record, "
                     "created_at) VALUES ('default', ?, ?, ?, ?, 0)", base, address, action,
                     record)
            return
        client, bucket, prefix = self._s3()
        seqs = [int(k.rsplit("/", 1)[1].split(".")[0]) for k in self._s3_keys(
            f"journal/{base:020d}/")]
        key = f"{prefix}journal/{base:020d}/{max(seqs, default=0) + 1:020d}.json"
        client.put_object(Bucket=bucket, Key=key,
                          Body=json.dumps([[address, action, record]]).encode())

    def journal_count(self) -> int:
        """How many journal rows (S3: journal objects) the store holds, in every workspace."""
        if self.kind != "s3":
            return int(self.sql("SELECT COUNT(*) FROM journal")[0][0])
        client, bucket, _ = self._s3()
        settings = json.loads(self.target)
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=f"{settings['key']}/env:/")
        return sum(1 for page in pages for o in page.get("Contents", ())
                   if "/journal/" in o["Key"])

    def close(self) -> None:
        for worker in self._workers:
            worker.stop()
        for backend in self._opened:
            backend.close()


@pytest.fixture(params=["sqlite", "postgres", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Store]:
    if request.param == "sqlite":
        target = str(tmp_path / ".tectum" / "state.db")
    elif request.param == "s3":  # a bucket and lock table of the test's own on moto
        target = request.getfixturevalue("s3_state")
    else:
        target = request.getfixturevalue("pg_dsn")
    s = Store(request.param, target)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def s3_state(moto: Any) -> Iterator[str]:
    """The JSON of the S3 backend settings of a fresh bucket and DynamoDB lock table on the
    moto server (both removed after the test, as moto's reset removes everything)."""
    import boto3

    suffix = os.urandom(4).hex()
    bucket, table = f"tectum-state-{suffix}", f"tectum-locks-{suffix}"
    boto3.client("s3").create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    boto3.client("dynamodb").create_table(
        TableName=table, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "LockID", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "LockID", "KeyType": "HASH"}])
    yield json.dumps({"bucket": bucket, "key": f"proj-{suffix}", "dynamodb_table": table})


def diag(exc: pytest.ExceptionInfo[DiagnosticError]) -> Diagnostic:
    return next(iter(exc.value.diagnostics))


def rec(address: str, **attrs: Any) -> ResourceRecord:
    return ResourceRecord(address, "file", attrs, [], None)


def state_with(*records: ResourceRecord, base: State | None = None) -> State:
    state = base.copy() if base is not None else State.new()
    for r in records:
        state.resources[r.address] = r
    return state


# -- lock ---------------------------------------------------------------------------------------

def test_lock_excludes_another_object(store: Store) -> None:
    first, second = store.open(), store.open()
    info, warning = first.lock("apply")
    assert warning is None
    assert info.pid == os.getpid() and info.operation == "apply"
    with pytest.raises(DiagnosticError) as exc:
        second.lock("plan")
    assert diag(exc).summary == "State is locked"
    assert f"ID {info.id}" in diag(exc).detail and f"pid {os.getpid()} " in diag(exc).detail
    held = second.lock_info()
    assert held is not None and held.id == info.id
    assert first.unlock("not-the-id") is False
    with pytest.raises(DiagnosticError):
        second.lock("plan")
    assert first.unlock(info.id) is True
    info2, warning = second.lock("plan")
    assert warning is None, "a lock released cleanly is not 'taken over'"
    assert second.unlock(info2.id)


def test_lock_not_taken_twice_by_one_object(store: Store) -> None:
    backend = store.open()
    info, _ = backend.lock("apply")
    with pytest.raises(DiagnosticError) as exc:
        backend.lock("apply")
    assert diag(exc).summary == "State is locked" and info.id in diag(exc).detail


def test_lock_excludes_another_process(store: Store) -> None:
    worker = store.worker()
    held = worker.lock()
    assert held.pid == worker.pid
    backend = store.open()
    with pytest.raises(DiagnosticError) as exc:
        backend.lock("apply")
    assert diag(exc).summary == "State is locked"
    assert f"pid {worker.pid} " in diag(exc).detail and held.id in diag(exc).detail
    assert worker.call(op="unlock", id=held.id) == {"ok": True, "released": True}
    info, warning = backend.lock("apply")
    assert warning is None
    assert backend.unlock(info.id)


def test_lock_released_when_holder_is_killed(store: Store) -> None:
    worker = store.worker()
    held = worker.lock()
    worker.kill()
    backend = store.open()
    # the database notices the closed connection within moments; a file lock at once
    info, warning = backend.lock("apply", timeout=10)
    assert warning is not None and "did not finish cleanly" in warning
    assert held.id in warning and f"pid {worker.pid} " in warning
    assert backend.unlock(info.id)
    _, warning = backend.lock("apply")
    assert warning is None


def test_lock_timeout_waits_for_the_holder(store: Store) -> None:
    worker = store.worker()
    held = worker.lock()
    worker.send(op="unlock", id=held.id, delay=1.0)
    backend = store.open()
    start = time.monotonic()
    info, warning = backend.lock("apply", timeout=10)
    waited = time.monotonic() - start
    assert 0.9 <= waited < 5, waited
    assert warning is None and info.pid == os.getpid()
    assert worker.recv() == {"ok": True, "released": True}


def test_lock_timeout_expires(store: Store) -> None:
    worker = store.worker()
    held = worker.lock()
    backend = store.open()
    start = time.monotonic()
    with pytest.raises(DiagnosticError) as exc:
        backend.lock("apply", timeout=1.5)
    waited = time.monotonic() - start
    assert diag(exc).summary == "State is locked"
    assert "waited 1.5 s" in diag(exc).detail and held.id in diag(exc).detail
    assert 1.4 <= waited < 3, waited


def test_force_unlock_wrong_id_refused(store: Store) -> None:
    worker = store.worker()
    held = worker.lock()
    backend = store.open()
    with pytest.raises(DiagnosticError) as exc:
        backend.force_unlock("0" * 32)
    assert diag(exc).summary == "Lock ID mismatch" and held.id in diag(exc).detail
    with pytest.raises(DiagnosticError) as exc:
        backend.lock("apply")
    assert diag(exc).summary == "State is locked"


def test_force_unlock_not_locked(store: Store) -> None:
    with pytest.raises(DiagnosticError) as exc:
        store.open().force_unlock("0" * 32)
    assert diag(exc).summary == "Not locked"


def test_force_unlock_dead_holder_clears_its_details(store: Store) -> None:
    worker = store.worker()
    held = worker.lock()
    worker.kill()
    backend = store.open()
    deadline = time.monotonic() + 10
    while True:  # (PostgreSQL: until the server has seen the session end)
        try:
            backend.force_unlock(held.id)
            break
        except DiagnosticError as exc:
            assert next(iter(exc.diagnostics)).summary == "Lock is in use"
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert backend.lock_info() is None
    _, warning = backend.lock("apply")
    assert warning is None


def test_force_unlock_live_holder(store: Store) -> None:
    """SQLite cannot take a flock from a live process: refused, the holder keeps it.
    PostgreSQL terminates the holder's session, S3 deletes the DynamoDB lock item: the lock is
    free and the holder's next state operation fails instead of writing without the lock."""
    worker = store.worker()
    held = worker.lock()
    backend = store.open()
    if store.kind == "sqlite":
        with pytest.raises(DiagnosticError) as exc:
            backend.force_unlock(held.id)
        assert diag(exc).summary == "Lock is in use" and f"pid {worker.pid} " in \
            diag(exc).detail
        with pytest.raises(DiagnosticError):
            backend.lock("apply")
        return
    backend.force_unlock(held.id)
    assert backend.lock_info() is None
    info, warning = backend.lock("apply")
    assert warning is None
    reply = worker.call(op="write")
    assert not reply["ok"] and reply["summary"] == "State lock lost", reply
    assert worker.call(op="unlock", id=held.id) == {"ok": True, "released": False}
    assert store.open().history() == [], "the holder wrote nothing after losing the lock"
    assert backend.unlock(info.id)


def test_racing_lockers_exactly_one_wins(store: Store) -> None:
    """Two processes call lock() within 10 ms of each other, 50 times: exactly one gets it,
    the other a DiagnosticError naming that winner (its lock ID and pid). A trial whose lockers a
    loaded machine started further apart still must have one winner, but does not count as a
    race; at least 40 of the 50 must be races."""
    workers = [store.worker(), store.worker()]
    wins = {w.pid: 0 for w in workers}
    misnamed: list[str] = []
    races = 0
    for trial in range(50):
        at = time.time() + 0.03
        for w in workers:
            w.send(op="lock", at=at)
        replies = [w.recv() for w in workers]
        spread = abs(replies[0]["started"] - replies[1]["started"])
        races += spread < 0.010
        winners = [(w, r) for w, r in zip(workers, replies) if r["ok"]]
        losers = [r for r in replies if not r["ok"]]
        assert len(winners) == 1 and len(losers) == 1, f"trial {trial}: {replies}"
        winner, won = winners[0]
        info = LockInfo(**won["info"])
        loser = losers[0]
        assert loser["summary"] == "State is locked", loser
        if f"ID {info.id}" not in loser["detail"] or f"pid {winner.pid} " not in loser["detail"]:
            misnamed.append(f"trial {trial}: {loser['detail']}")
        assert won["warning"] is None
        assert winner.call(op="unlock", id=info.id) == {"ok": True, "released": True}
        wins[winner.pid] += 1
    assert sum(wins.values()) == 50
    assert races >= 40, f"only {races} of 50 trials started both lockers within 10 ms"
    assert not misnamed, f"losers that did not name the winner: {misnamed}"


def test_sqlite_loser_names_a_winner_slow_to_write_its_details(tmp_path: Any) -> None:
    """The window the race above rarely hits, held open: the winner is paused for 2 s just
    after its ``flock`` succeeds, before it writes its details (as a loaded machine may do).
    A loser (``lock``) and an onlooker (``lock_info``) in that window still name it: taking the
    lock and writing its details are one step for them (the guard), so they wait for the
    details rather than find an empty lock file and report "details unavailable"."""
    store = Store("sqlite", str(tmp_path / ".tectum" / "state.db"))
    try:
        worker = store.worker()
        worker.send(op="slow_lock", pause=2.0)
        assert worker.recv() == {"paused": True}
        seen = store.open().lock_info()
        backend = store.open()
        with pytest.raises(DiagnosticError) as exc:
            backend.lock("plan")
        reply = worker.recv()
        assert reply["ok"] and reply["warning"] is None, reply
        held = LockInfo(**reply["info"])
        assert held.pid == worker.pid
        assert seen == held, f"lock_info in the window: {seen}"
        assert diag(exc).summary == "State is locked"
        assert f"ID {held.id}" in diag(exc).detail and f"pid {worker.pid} " in diag(exc).detail
        assert worker.call(op="unlock", id=held.id) == {"ok": True, "released": True}
        info, warning = backend.lock("plan")
        assert warning is None and backend.unlock(info.id)
    finally:
        store.close()


# -- versions ---------------------------------------------------------------------------------

def test_write_increments_serial(store: Store) -> None:
    backend = store.open()
    state = backend.read()
    assert state.serial == 0 and state.resources == {}
    lineage = state.lineage
    assert backend.write(state_with(rec("file.a", n=1), base=state), "apply") == 1
    state = backend.read()
    assert (state.serial, state.lineage) == (1, lineage)
    assert state.resources == {"file.a": rec("file.a", n=1)}
    assert backend.write(state_with(rec("file.b"), base=state), "apply") == 2
    other = store.open().read()
    assert (other.serial, other.lineage, sorted(other.resources)) == \
        (2, lineage, ["file.a", "file.b"])
    assert [v.serial for v in backend.history()] == [1, 2]


def test_push_rules(store: Store) -> None:
    backend = store.open()
    base = backend.read()
    backend.write(base.copy(), "apply")
    backend.write(backend.read(), "apply")  # serial 2
    stranger = state_with(rec("file.x"))
    stranger.serial = 7
    with pytest.raises(DiagnosticError) as exc:
        backend.push(stranger)
    assert diag(exc).summary == "State lineage differs"
    older = backend.read()
    older.serial = 1
    with pytest.raises(DiagnosticError) as exc:
        backend.push(older)
    assert diag(exc).summary == "State serial is older"
    assert [v.serial for v in backend.history()] == [1, 2], "refused pushes store nothing"
    assert (stranger.serial, older.serial) == (7, 1), "a refused push leaves the serial as it was"
    same = backend.read()
    assert backend.push(same) == 3
    assert backend.push(older, force=True) == 4
    forced = backend.push(state_with(rec("file.x")), force=True)
    assert forced == 5
    now = backend.read()
    assert now.serial == 5 and sorted(now.resources) == ["file.x"]
    assert [v.operation for v in backend.history()][-3:] == ["push"] * 3


def test_history_lists_every_version(store: Store) -> None:
    backend = store.open()
    before = time.time()
    state = backend.read()
    backend.write(state, "apply", revision="git:abc123")
    backend.write(backend.read(), "destroy", revision="git:def456")
    backend.push(backend.read())
    history = backend.history()
    assert [(v.serial, v.operation, v.revision) for v in history] == [
        (1, "apply", "git:abc123"), (2, "destroy", "git:def456"), (3, "push", None)]
    for v in history:
        assert v.lineage == state.lineage
        assert before - 1 <= v.created_at <= time.time() + 1
        assert v.author.endswith("@" + os.uname().nodename) and "@" in v.author
    assert store.open().history() == history


def test_read_version_returns_the_desired_snapshot(store: Store) -> None:
    backend = store.open()
    desired = {"file.a": {"path": "/tmp/a", "content": "x"}, "nested": [1, {"b": None}]}
    one = state_with(rec("file.a", path="/tmp/a"))
    backend.write(one, "apply", revision="r1", desired=desired)
    backend.write(state_with(rec("file.b"), base=backend.read()), "apply")
    state, got = backend.read_version(1)
    assert got == desired
    assert (state.serial, sorted(state.resources)) == (1, ["file.a"])
    state, got = backend.read_version(2)
    assert got is None and sorted(state.resources) == ["file.a", "file.b"]
    with pytest.raises(DiagnosticError) as exc:
        backend.read_version(3)
    assert diag(exc).summary == "No such state version"


# -- journal ----------------------------------------------------------------------------------

INTENTS = [
    Intent("file.a", "update", "file", {"path": "/a"}),
    Intent("file.b", "create", "file", {"path": "/b"}),
    Intent("file.c", "create", "file", {"path": "/c"}),
    Intent("file.z", "delete", "file", {"path": "/z"}),
    Intent("file.y", "delete", "file", {"path": "/y"}),
]
RESULTS: list[tuple[str, str, ResourceRecord | None]] = [
    ("file.a", "update", rec("file.a", v=2)),
    ("file.b", "create", rec("file.b", v=1)),
    ("file.z", "delete", None),
]


@pytest.mark.parametrize("crash", ["drop", "kill"])
def test_journal_recovery(store: Store, crash: str) -> None:
    backend = store.open()
    base = state_with(rec("file.a", v=1), rec("file.z"), rec("file.y"), rec("file.keep"))
    serial = backend.write(base, "apply")
    if crash == "drop":  # the object goes away without write()
        backend.intend(serial, INTENTS)
        backend.record(serial, RESULTS)
        backend.close()
        del backend
    else:  # the process is killed after its journal commits
        worker = store.worker()
        reply = worker.call(
            op="journal", base=serial, intents=[list(i) for i in INTENTS],
            records=[[a, act, r.to_json() if r else None] for a, act, r in RESULTS])
        assert reply == {"ok": True}
        worker.kill()
    fresh = store.open()
    state = fresh.read()
    assert (state.serial, state.lineage) == (serial, base.lineage)
    assert state.resources == {
        "file.a": rec("file.a", v=2), "file.b": rec("file.b", v=1),
        "file.y": rec("file.y"), "file.keep": rec("file.keep")}
    assert fresh.pending_intents() == [INTENTS[2], INTENTS[4]]
    assert fresh.read_version(serial)[0].resources == base.resources, \
        "the stored version itself is unchanged"
    # write folds the journal into a new version and clears it
    assert fresh.write(state, "apply") == serial + 1
    assert fresh.pending_intents() == []
    assert store.journal_count() == 0
    assert store.open().read().resources == state.resources


def test_journal_of_an_older_version_is_not_replayed(store: Store) -> None:
    backend = store.open()
    serial = backend.write(state_with(rec("file.a", v=1)), "apply")
    backend.record(serial - 1, [("file.a", "update", rec("file.a", v=99))])
    backend.intend(serial - 1, INTENTS[:1])
    assert backend.read().resources == {"file.a": rec("file.a", v=1)}
    assert backend.pending_intents() == []


def test_journal_on_an_empty_workspace(store: Store) -> None:
    backend = store.open()
    backend.intend(0, INTENTS[:2])
    backend.record(0, [RESULTS[1]])
    assert store.open().read().resources == {"file.b": rec("file.b", v=1)}
    assert store.open().pending_intents() == [INTENTS[0]]


def test_an_update_intent_after_an_unfinished_create_stays_a_create(store: Store) -> None:
    """Run 1 is killed after making an object, before recording it; run 2 plans an update of
    it (a tag) and is killed too: the object is still one tectum created (destroy deletes it),
    so the pending intent keeps the create's action with the later identity."""
    backend = store.open()
    backend.intend(0, [Intent("file.c", "create", "file", {"path": "/c"})])
    backend.intend(0, [Intent("file.c", "update", "file", {"path": "/c", "id": "x"})])
    assert store.open().pending_intents() == [
        Intent("file.c", "create", "file", {"path": "/c", "id": "x"})]


# -- workspaces -------------------------------------------------------------------------------

def test_workspaces_are_isolated(store: Store) -> None:
    default, staging = store.open("default"), store.open("staging")
    default.write(state_with(rec("file.d")), "apply")
    default.write(default.read(), "apply")
    staging.write(state_with(rec("file.s")), "apply")
    assert default.read().serial == 2 and staging.read().serial == 1
    assert sorted(default.read().resources) == ["file.d"]
    assert sorted(staging.read().resources) == ["file.s"]
    assert default.read().lineage != staging.read().lineage
    staging.intend(1, INTENTS[:1])
    assert default.pending_intents() == [] and staging.pending_intents() == INTENTS[:1]
    d_info, _ = default.lock("apply")
    s_info, _ = store.open("staging").lock("apply")  # a lock per workspace
    assert default.workspaces() == staging.workspaces() == ["default", "staging"]
    store.open("prod").write(State.new(), "apply")
    assert default.workspaces() == ["default", "prod", "staging"]
    default.delete_workspace("staging")
    assert default.workspaces() == ["default", "prod"]
    gone = store.open("staging")
    assert gone.history() == [] and gone.read().serial == 0 and gone.pending_intents() == []
    assert default.read().serial == 2
    assert default.unlock(d_info.id)


# -- damage -----------------------------------------------------------------------------------

@pytest.mark.parametrize("document", ['{"format_version": 1, ', "[]", '{"format_version": 1}'])
def test_corrupt_state_document(store: Store, document: str) -> None:
    backend = store.open()
    backend.write(state_with(rec("file.a")), "apply")
    backend.write(backend.read(), "apply")
    store.set_document(document, serial=2)
    for call in (backend.read, store.open().read, lambda: backend.read_version(2),
                 lambda: backend.push(State.new())):
        with pytest.raises(DiagnosticError) as exc:
            call()
        assert diag(exc).summary == "Unreadable state"
        assert "state version 2 is damaged" in diag(exc).detail
    assert backend.read_version(1)[0].resources == {"file.a": rec("file.a")}
    assert [v.serial for v in backend.history()] == [1, 2]


def test_corrupt_journal_entry(store: Store) -> None:
    backend = store.open()
    serial = backend.write(state_with(rec("file.a")), "apply")
    backend.intend(serial, INTENTS[:1])
    backend.record(serial, RESULTS[:1])
    store.set_journal_records("{not json")
    for call in (backend.read, backend.pending_intents):
        with pytest.raises(DiagnosticError) as exc:
            call()
        assert diag(exc).summary == "Unreadable state"
        assert "journal" in diag(exc).detail and "file.a" in diag(exc).detail


@pytest.mark.parametrize("record, damage", [
    (json.dumps(rec("file.b", v=2).to_json()), "the record is for file.b"),
    (json.dumps({"address": "file.a", "type": "file"}), "has no 'attributes'"),
    ("[" * 100_000 + "]" * 100_000, "damaged"),
], ids=["another address", "no attributes", "nested too deep"])
def test_journal_record_that_does_not_fit_its_row(store: Store, record: str,
                                                  damage: str) -> None:
    """The journal replay rule, the same on every backend (it had drifted: PostgreSQL took a
    record for another address, and a deep one crashed it): a result row holds the record of
    its own address, else the state is unreadable rather than silently wrong."""
    backend = store.open()
    serial = backend.write(state_with(rec("file.a", v=1)), "apply")
    backend.record(serial, [("file.a", "update", rec("file.a", v=2))])
    store.set_journal_records(record)
    for call in (backend.read, store.open().read):
        with pytest.raises(DiagnosticError) as exc:
            call()
        assert diag(exc).summary == "Unreadable state"
        assert "the journal entry for file.a is damaged" in diag(exc).detail
        assert damage in diag(exc).detail
    assert backend.read_version(serial)[0].resources == {"file.a": rec("file.a", v=1)}


@pytest.mark.parametrize("outputs", ['{"url": 1}', "[]", '"x"'])
def test_journal_outputs_that_are_not_objects(store: Store, outputs: str) -> None:
    backend = store.open()
    serial = backend.write(state_with(rec("file.a")), "apply")
    store.add_journal_row(serial, "outputs", "outputs", outputs)
    with pytest.raises(DiagnosticError) as exc:
        backend.read()
    assert diag(exc).summary == "Unreadable state"
    assert "journal entry for outputs is damaged" in diag(exc).detail
    assert "outputs must be an object of objects" in diag(exc).detail


def test_deeply_nested_state_document(store: Store) -> None:
    backend = store.open()
    backend.write(state_with(rec("file.a")), "apply")
    store.set_document("[" * 100_000 + "]" * 100_000)
    for call in (backend.read, lambda: backend.read_version(1)):
        with pytest.raises(DiagnosticError) as exc:
            call()
        assert diag(exc).summary == "Unreadable state"
        assert "state version 1 is damaged" in diag(exc).detail


def test_damaged_desired_state(store: Store) -> None:
    backend = store.open()
    backend.write(state_with(rec("file.a")), "apply", desired={"resources": {}})
    store.set_desired("{not json")
    with pytest.raises(DiagnosticError) as exc:
        backend.read_version(1)
    assert diag(exc).summary == "Unreadable state"
    assert "the desired state of version 1 is damaged" in diag(exc).detail
    assert backend.read().resources == {"file.a": rec("file.a")}


def test_a_format_1_document_is_read(store: Store) -> None:
    """A version stored by tectum before format 2 (no ``schema_version``) reads as it was, and
    the next write stores it in the current format."""
    backend = store.open()
    backend.write(state_with(rec("file.a", n=1)), "apply")
    old = json.loads(store.document(1))
    old["format_version"] = 1
    store.set_document(json.dumps(old))
    state = backend.read()
    assert state.resources == {"file.a": rec("file.a", n=1)}
    assert backend.write(state, "apply") == 2
    assert json.loads(store.document(2))["format_version"] == FORMAT_VERSION == 2


# -- PostgreSQL specifics -----------------------------------------------------------------------

def test_postgres_import_is_lazy() -> None:
    code = ("import sys, tectum, tectum.backends.postgres as p; "
            "p.PostgresBackend('host=127.0.0.1'); assert 'psycopg' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_postgres_unreachable() -> None:
    from tectum.backends.postgres import PostgresBackend

    port = _closed_port()
    for dsn in (f"host=127.0.0.1 port={port} user=ops password=hunter2 dbname=tf",
                f"postgresql://ops:hunter2@127.0.0.1:{port}/tf"):
        backend = PostgresBackend(dsn)
        for call in (backend.read, lambda b=backend: b.lock("apply"), backend.history):
            with pytest.raises(DiagnosticError) as exc:
                call()
            d = diag(exc)
            assert d.summary == "Cannot reach the state database"
            assert f"host 127.0.0.1 port {port}, database tf, user ops" in d.detail
            assert "Connection refused" in d.detail and "running" in d.detail
            assert "hunter2" not in d.detail
    with pytest.raises(DiagnosticError) as exc:
        PostgresBackend("host=x password='hunter2").read()
    assert diag(exc).summary == "Invalid state database address"
    assert "hunter2" not in diag(exc).detail


def test_postgres_wrong_credentials(postgres_dsn: str) -> None:
    from tectum.backends.postgres import PostgresBackend

    with pytest.raises(DiagnosticError) as exc:
        PostgresBackend(postgres_dsn.replace("dbname=tectum_test", "dbname=nosuch")).read()
    assert diag(exc).summary == "Cannot reach the state database"
    assert 'database "nosuch" does not exist' in diag(exc).detail


def test_postgres_connection_lost_while_holding_the_lock(pg_dsn: str) -> None:
    """The server ending the holder's session (restart, network, force-unlock) loses the lock:
    the run is told so instead of going on without it."""
    import psycopg

    from tectum.backends.postgres import PostgresBackend

    backend = PostgresBackend(pg_dsn)
    info, _ = backend.lock("apply")
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE application_name LIKE 'tectum%%'")
    with pytest.raises(DiagnosticError) as exc:
        backend.write(State.new(), "apply")
    assert diag(exc).summary == "State lock lost" and info.id in diag(exc).detail
    assert backend.unlock(info.id) is False
    assert backend.read().serial == 0  # reconnects once the lost lock has been given up
    other = PostgresBackend(pg_dsn)
    _, warning = other.lock("apply", timeout=5)
    assert warning is not None and info.id in warning
    other.close()
    backend.close()
