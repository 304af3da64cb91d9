"""``file`` and ``directory`` over SSH against a real test host (``tests.harness.fleet``; no
mocks): the issue-10 rules that the local tests in ``test_files.py`` check, through the SSH
connector's own scripts (one write, the batched ``write_files``, remove).

One host without apt (it boots in about a second); every path a test makes lives under its own
``/srv/tectum-files-<hex>`` directory, removed at teardown.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tectum.providers.host.connector as connector_module
from tectum.plans.plan import Action, ResourceChange
from tectum.providers.base import ApplyError, ReadItem
from tectum.providers.host.base import HostType
from tectum.providers.host.connector import Connector
from tectum.providers.host.files import DirectoryType, FileType
from tectum.providers.host.provider import HostProvider
from tectum.providers.host.ssh import SSHConnector
from tests.harness.fleet import Fleet

pytestmark = [
    pytest.mark.fleet,
    pytest.mark.skipif(os.geteuid() != 0, reason="the fleet harness needs root"),
]

HOST = "host1"


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    with Fleet(1) as fleet:
        yield fleet


@pytest.fixture
def conn(fleet: Fleet) -> Iterator[SSHConnector]:
    host = fleet.host(HOST)
    c = SSHConnector(host.name, host.address, port=host.port, key_path=host.key_path,
                     known_hosts=host.known_hosts, log_path="")
    yield c
    c.close()


@pytest.fixture
def base(fleet: Fleet) -> Iterator[str]:
    """A fresh directory on the host."""
    path = f"/srv/tectum-files-{secrets.token_hex(4)}"
    fleet.run(HOST, f"mkdir -p {path}", check=True)
    yield path
    fleet.run(HOST, f"rm -rf {path}")


def upper(fleet: Fleet, path: str) -> Path:
    """PATH on the host as seen from this machine (the overlay's upper directory)."""
    return fleet.upper(HOST) / path.lstrip("/")


def leftovers(fleet: Fleet, base: str) -> list[str]:
    return sorted(p.name for p in upper(fleet, base).rglob("*") if ".tectum-" in p.name)


def ids_mode(fleet: Fleet, path: str) -> tuple[int, int, str]:
    st = os.lstat(upper(fleet, path))
    return st.st_uid, st.st_gid, format(st.st_mode & 0o7777, "04o")


def plan_one(rt: HostType, conn: Connector, attrs: dict[str, Any],
             prior: dict[str, Any] | None = None, *, prefetch: bool = False) -> ResourceChange:
    desired = rt.prepare(attrs, "/")
    item = ReadItem(desired, prior)
    provider = HostProvider()
    if prefetch:  # as the planner reads: every fact of the host in one round trip
        provider.begin_read(conn, [(rt, [item])])
    try:
        observed = rt.read(conn, [item])[0]
    finally:
        provider.end_read(conn)
    action, changes = rt.plan(desired, observed, prior)
    # one address per path: a batch reports its results by address
    address = f"{rt.name}.{hashlib.sha256(str(desired['path']).encode()).hexdigest()[:8]}"
    return ResourceChange(address=address, type=rt.name, action=action,
                          before=rt.stored(observed) if observed is not None else None,
                          after=desired, changes=changes, prior=prior)


def put(fleet: Fleet, path: str, data: bytes, uid: int, gid: int, mode: int) -> None:
    """A file on the host made from this machine, owned by uid:gid."""
    target = upper(fleet, path)
    target.write_bytes(data)
    os.chown(target, uid, gid)
    target.chmod(mode)


# -- a write keeps the owner and group it does not manage (issue 10 item 3) ---------------------

#: name: (existing file as (uid, gid, mode) or None, mode, owner, group) -> (uid, gid, mode)
CASES: dict[str, tuple[tuple[int, int, int] | None, str | None, str | None, str | None,
                       tuple[int, int, str]]] = {
    "mode-only": ((4242, 4343, 0o600), "0640", None, None, (4242, 4343, "0640")),
    "set-id-mode": ((4242, 4343, 0o600), "4750", None, None, (4242, 4343, "4750")),
    "owner-only": ((4242, 4343, 0o600), "0640", "4244", None, (4244, 4343, "0640")),
    "group-only": ((4242, 4343, 0o600), None, None, "4345", (4242, 4345, "0600")),
    "owner-no-mode": ((4242, 4343, 0o600), None, "4244", None, (4244, 4343, "0600")),
    "nothing": ((4242, 4343, 0o640), None, None, None, (4242, 4343, "0640")),
    "root-file": ((0, 0, 0o600), "0644", None, None, (0, 0, "0644")),
    "new-file": (None, "0640", None, None, (0, 0, "0640")),
    "new-owned": (None, "0600", "4244", None, (4244, 0, "0600")),
}


@pytest.mark.parametrize("how", ["one", "many"])
def test_a_write_keeps_the_owner_and_group_it_does_not_manage(
        fleet: Fleet, conn: SSHConnector, base: str, how: str) -> None:
    for name, (existing, *_rest) in CASES.items():
        if existing is not None:
            put(fleet, f"{base}/{name}", b"old\n", *existing)
    items = [(f"{base}/{name}", f"new {name}\n".encode(), mode, owner, group)
             for name, (_e, mode, owner, group, _w) in CASES.items()]
    conn.connect()
    before = conn.round_trips
    if how == "one":
        for path, data, mode, owner, group in items:
            conn.write_file(path, data, mode=mode, owner=owner, group=group)
        assert conn.round_trips == before + len(items)
    else:
        facts = conn.write_files(items)
        assert conn.round_trips == before + 1  # still one round trip for the whole batch
        for (name, case), fact in zip(CASES.items(), facts, strict=True):
            assert not isinstance(fact, Exception), (name, fact)
            assert (fact.uid, fact.gid, fact.mode) == case[4], name
    for name, case in CASES.items():
        path = f"{base}/{name}"
        assert upper(fleet, path).read_bytes() == f"new {name}\n".encode(), name
        assert ids_mode(fleet, path) == case[4], name
    assert leftovers(fleet, base) == []


def test_a_rewrite_through_the_file_type_settles(fleet: Fleet, conn: SSHConnector,
                                                 base: str) -> None:
    # the batch path of the resource type (apply_batch -> write_files): state records the
    # owner the file has, and the next plan is a no-op
    rt = FileType()
    paths = [f"{base}/a", f"{base}/b"]
    for path in paths:
        put(fleet, path, b"old\n", 4242, 4343, 0o600)
    attrs = [{"path": p, "content": "new\n", "mode": "0640"} for p in paths]
    changes = [plan_one(rt, conn, a, prefetch=True) for a in attrs]
    assert [c.action for c in changes] == [Action.UPDATE, Action.UPDATE]
    results = rt.apply_batch(conn, changes)
    for path, stored in zip(paths, results, strict=True):
        assert isinstance(stored, dict), stored
        assert (stored["owner"], stored["group"], stored["mode"]) == ("4242", "4343", "0640")
        assert ids_mode(fleet, path) == (4242, 4343, "0640")
    for a, stored in zip(attrs, results, strict=True):
        assert isinstance(stored, dict)
        assert plan_one(rt, conn, a, stored, prefetch=True).action is Action.NOOP


# -- validate (issue 10 item 15) ----------------------------------------------------------------

def test_validate_over_ssh(fleet: Fleet, conn: SSHConnector, base: str) -> None:
    rt = FileType()
    path = f"{base}/site.conf"
    seen = f"{base}/seen"
    put(fleet, path, b"ok old\n", 4242, 4343, 0o600)
    check = (f"sh -c 'echo \"$1\" >> {seen}; stat -c %a:%u \"$1\" >> {seen}; "
             f"grep -q ^ok \"$1\"' sh %s")
    attrs = {"path": path, "content": "ok new\n", "mode": "0640", "validate": check}
    change = plan_one(rt, conn, attrs)
    stored = rt.apply(conn, change)
    assert upper(fleet, path).read_text() == "ok new\n"
    staged, mode = upper(fleet, seen).read_text().splitlines()
    # the command saw the staged file beside the target, with its final mode and owner
    assert os.path.dirname(staged) == base and ".tectum-" in staged and mode == "640:4242"
    assert leftovers(fleet, base) == []
    assert stored is not None and stored["validate"] == check
    assert plan_one(rt, conn, {**attrs, "validate": "true %s"}, stored).action is Action.NOOP

    bad = ("sh -c 'for i in $(seq -w 1 30); do echo line-$i; done; "
           "echo \"rejected: $(cat \"$1\")\" >&2; exit 3' sh %s")
    change = plan_one(rt, conn, {**attrs, "content": "broken\n", "validate": bad}, stored)
    with pytest.raises(ApplyError) as info:
        rt.apply(conn, change)
    message = str(info.value)
    assert path in message and "exit code 3" in message, message
    assert "rejected: broken" in message and "line-30" in message, message
    assert "line-01" not in message, message
    assert upper(fleet, path).read_text() == "ok new\n"
    assert ids_mode(fleet, path) == (4242, 4343, "0640")
    assert leftovers(fleet, base) == []

    new = f"{base}/new.conf"
    for command, code in (("false %s", 1), ("tectum-no-such-validator %s", 127)):
        with pytest.raises(connector_module.ValidationFailed, match=f"exit code {code}"):
            conn.write_file(new, b"x\n", mode=None, owner=None, group=None, validate=command)
        assert not upper(fleet, new).exists() and leftovers(fleet, base) == []


def test_validate_over_ssh_substitutes_the_path_as_one_word(fleet: Fleet, conn: SSHConnector,
                                                            base: str) -> None:
    # nothing in the command or the staged path is interpreted by the host's shell
    name = "a b'c\"$(touch pwned)`touch pwned` ;* $t"
    copy = f"{base}/copy"
    check = (f"sh -c 'cd {base} && test \"$1\" = --%%s && test \"$2\" = \"--file=$3\" "
             f"&& cp -- \"$3\" {copy}' sh --%%s --file=%s %s")
    conn.write_file(f"{base}/{name}", b"data\n", mode=None, owner=None, group=None,
                    validate=check)
    assert upper(fleet, f"{base}/{name}").read_bytes() == b"data\n"
    assert upper(fleet, copy).read_bytes() == b"data\n"
    assert not upper(fleet, f"{base}/pwned").exists()
    assert not (fleet.upper(HOST) / "pwned").exists() and not (fleet.upper(HOST) / "root" /
                                                                "pwned").exists()
    assert leftovers(fleet, base) == []


def test_files_with_validate_leave_the_batch_but_the_rest_stays_in_it(
        fleet: Fleet, conn: SSHConnector, base: str) -> None:
    rt = FileType()
    attrs = [{"path": f"{base}/plain{i}", "content": f"{i}\n"} for i in range(5)]
    attrs += [{"path": f"{base}/checked", "content": "ok\n", "validate": "grep -q ok %s"},
              {"path": f"{base}/refused", "content": "no\n", "validate": "grep -q ok %s"}]
    changes = [plan_one(rt, conn, a) for a in attrs]
    conn.connect()
    before = conn.round_trips
    results = rt.apply_batch(conn, changes)
    # one round trip for the plain writes, one per file with validate (a write, plus the
    # read-back of what it made)
    assert conn.round_trips - before <= 1 + 2 * 2
    assert all(isinstance(r, dict) for r in results[:6]), results
    assert isinstance(results[6], ApplyError) and "grep -q ok" in str(results[6])
    assert upper(fleet, f"{base}/checked").read_text() == "ok\n"
    assert not upper(fleet, f"{base}/refused").exists()
    assert [upper(fleet, f"{base}/plain{i}").read_text() for i in range(5)] == \
        [f"{i}\n" for i in range(5)]
    assert leftovers(fleet, base) == []


# -- deletes are verified (issue 10 item 2) -----------------------------------------------------

def _delete(rt: HostType, path: str) -> ResourceChange:
    prior = {"path": path}
    return ResourceChange(address=f"{rt.name}.x", type=rt.name, action=Action.DELETE,
                          before=prior, after=None, changes=[], prior=prior)


def test_directory_delete_while_its_files_are_deleted_concurrently(
        fleet: Fleet, conn: SSHConnector, base: str) -> None:
    files, dirs = FileType(), DirectoryType()
    for trial in range(4):
        root = f"{base}/t{trial}"
        fleet.run(HOST, f"mkdir -p {root} && cd {root} && for i in $(seq 20); do mkdir s$i; "
                        f"for j in $(seq 30); do echo x > s$i/f$j; done; done", check=True)
        paths = [f"{root}/s{i}/f{j}" for j in range(1, 31) for i in range(1, 21)]
        start = threading.Barrier(5)
        errors: list[BaseException] = []

        def worker(chunk: list[str], start: threading.Barrier,
                   errors: list[BaseException]) -> None:
            start.wait()
            for p in chunk:
                try:
                    files.apply(conn, _delete(files, p))
                except BaseException as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)

        threads = [threading.Thread(target=worker, args=(paths[k::4], start, errors))
                   for k in range(4)]
        for t in threads:
            t.start()
        start.wait()
        try:
            assert dirs.apply(conn, _delete(dirs, root)) is None
        finally:
            for t in threads:
                t.join()
        assert errors == []
        assert not upper(fleet, root).exists(), f"trial {trial}"
        assert not conn.exists(root)


def test_a_delete_that_leaves_the_directory_fails_over_ssh(fleet: Fleet, conn: SSHConnector,
                                                           base: str) -> None:
    root = f"{base}/d"
    fleet.run(HOST, f"mkdir -p {root}/mnt && mount -t tmpfs tectum-test {root}/mnt", check=True)
    try:
        with pytest.raises(ApplyError, match=f"cannot remove {root}: .*busy"):
            DirectoryType().apply(conn, _delete(DirectoryType(), root))
        assert conn.exists(f"{root}/mnt")
    finally:
        fleet.run(HOST, f"umount {root}/mnt")
    conn.remove(f"{base}/gone", recursive=True)  # nothing there: no error
    conn.remove(f"{base}/gone")


# -- content is compared whole (issue 10 item 19) -----------------------------------------------

def test_content_differing_only_after_8_kib_or_at_the_end_of_megabytes_over_ssh(
        fleet: Fleet, conn: SSHConnector, base: str) -> None:
    rt = FileType()
    big = "".join(f"line {i}\n" for i in range(250_000))

    def contents(tail: str) -> list[dict[str, Any]]:
        return [{"path": f"{base}/small", "content": "x" * 9000 + tail + "\n"},
                {"path": f"{base}/big", "content": big + tail + "\n"}]

    # first write in a batch (write_files), read as the planner does (prefetch)
    changes = [plan_one(rt, conn, a, prefetch=True) for a in contents("a")]
    stored = rt.apply_batch(conn, changes)
    assert all(isinstance(s, dict) for s in stored), stored
    for a, prior in zip(contents("a"), stored, strict=True):
        assert isinstance(prior, dict)
        assert plan_one(rt, conn, a, prior, prefetch=True).action is Action.NOOP
        assert plan_one(rt, conn, a, prior).action is Action.NOOP
    # the change after 8 KiB is seen, written one by one (write_file), and then settles
    for a, prior in zip(contents("b"), stored, strict=True):
        assert isinstance(prior, dict)
        for prefetch in (True, False):
            change = plan_one(rt, conn, a, prior, prefetch=prefetch)
            assert change.action is Action.UPDATE
            assert [c.name for c in change.changes] == ["content"]
        after = rt.apply(conn, change)
        want = a["content"].encode()
        assert upper(fleet, a["path"]).read_bytes() == want
        assert after is not None and after["content_sha256"] == hashlib.sha256(want).hexdigest()
        assert plan_one(rt, conn, a, after, prefetch=True).action is Action.NOOP
        assert plan_one(rt, conn, a, after).action is Action.NOOP
    assert len(big) > 2_500_000
