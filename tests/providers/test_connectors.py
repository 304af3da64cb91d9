"""One connector suite, run over every connector: the same tests on this machine
(:class:`~tectum.providers.host.connector.LocalConnector`), on an SSH test host
(:class:`~tectum.providers.host.ssh.SSHConnector` against ``tests.harness.fleet``; marked
``fleet``) and in a running podman container
(:class:`~tectum.providers.podman.connector.PodmanConnector`, made from the test base image in a
podman storage of this module's own, ``tests.harness.images``; marked ``podman``), each also
through :class:`tectum.testing.FakeConnector` (the recording proxy must change nothing about
what a connector does).

Every test works in a fresh directory on the target and checks the outcome with the target's
own shell (``stat``, ``cat``, ``readlink``), not through the connector under test. What the
connector contract promises (``connector.py``): ``stat_paths`` facts, an atomic
``write_file`` that keeps the owner, group and mode it is not given, ``make_dir`` with
missing parents, ``make_symlink``, ``remove``, ``run``, ``prefetch``/``forget_facts``,
``sweep_temp``, and a log that marks each operation mutating or not.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tectum.providers.host.connector import (
    Connector,
    ConnectorError,
    FactRequest,
    LocalConnector,
    ValidationFailed,
)
from tectum.providers.host.ssh import HostUnreachable
from tectum.providers.podman.connector import PodmanConnector
from tectum.testing import FakeConnector
from tests.harness.fleet import Fleet
from tests.harness.images import PodmanStore

HOST = "host1"
fleet_only = [pytest.mark.fleet,
              pytest.mark.skipif(os.geteuid() != 0, reason="the fleet harness needs root")]
podman_only = [pytest.mark.podman,
               pytest.mark.skipif(os.geteuid() != 0, reason="the podman tests run podman as "
                                  "root")]


@dataclass
class Side:
    """A connector under test (``conn``), a fresh directory on its target (``base``), and the
    target's own shell (``sh``: a command string, its CompletedProcess; raises when it
    fails unless ``check=False``)."""

    kind: str
    conn: Connector
    base: str
    shell: Callable[[str], subprocess.CompletedProcess[str]]

    def sh(self, command: str, *, check: bool = True) -> str:
        proc = self.shell(command)
        if check:
            assert proc.returncode == 0, f"{command!r}: {proc.stderr}"
        return proc.stdout

    def path(self, name: str) -> str:
        return f"{self.base}/{name}"

    def stat(self, path: str) -> tuple[int, int, str, int]:
        """(uid, gid, mode as four octal digits, inode) of ``path`` (not followed)."""
        uid, gid, mode, ino = self.sh(f"stat -c '%u %g %a %i' {shlex.quote(path)}").split()
        return int(uid), int(gid), mode.zfill(4), int(ino)

    def log(self) -> list[dict[str, object]]:
        inner: Any = getattr(self.conn, "inner", self.conn)
        log: list[dict[str, object]] = inner.log
        return log


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    with Fleet(1) as fleet:
        yield fleet


@pytest.fixture(scope="module")
def podman_store() -> Iterator[PodmanStore]:
    """A podman storage of this module's own, with the test base image imported."""
    with PodmanStore() as store:
        store.import_base()
        yield store


def start_container(store: PodmanStore, name: str) -> None:
    """Start container ``name`` from the base image, idle (``sleep infinity``), no network."""
    store.podman.run(["run", "-d", "--name", name, "--network", "none",
                      *store.podman.ulimit_args(), store.import_base(), "sleep", "infinity"])


@pytest.fixture(scope="module")
def podman_container(podman_store: PodmanStore) -> Iterator[str]:
    """A running container of the base image (removed at the end of the module)."""
    name = f"tectum-conn-{secrets.token_hex(4)}"
    start_container(podman_store, name)
    try:
        yield name
    finally:
        podman_store.podman.run(["rm", "-f", "-t", "0", "--", name], check=False)


def _podman_shell(store: PodmanStore, container: str
                  ) -> Callable[[str], subprocess.CompletedProcess[str]]:
    """The container's own shell: ``podman exec CONTAINER sh -c COMMAND``."""

    def shell(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(store.podman.argv(["exec", container, "sh", "-c", command]),
                              capture_output=True, text=True, check=False,
                              stdin=subprocess.DEVNULL)

    return shell


def _local_shell(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=False,
                          stdin=subprocess.DEVNULL)


@pytest.fixture(params=[
    "local", "local-recorded",
    pytest.param("ssh", marks=fleet_only), pytest.param("ssh-recorded", marks=fleet_only),
    pytest.param("podman", marks=podman_only),
    pytest.param("podman-recorded", marks=podman_only),
])
def side(request: pytest.FixtureRequest) -> Iterator[Side]:
    kind = str(request.param)
    conn: Any
    if kind.startswith("local"):
        base = tempfile.mkdtemp(prefix="tectum-conn-")
        conn = LocalConnector(log_path="")
        shell: Callable[[str], subprocess.CompletedProcess[str]] = _local_shell

        def cleanup() -> object:
            shutil.rmtree(base, ignore_errors=True)
            return None
    elif kind.startswith("podman"):
        store: PodmanStore = request.getfixturevalue("podman_store")
        container: str = request.getfixturevalue("podman_container")
        base = f"/srv/tectum-conn-{secrets.token_hex(4)}"
        shell = _podman_shell(store, container)
        assert shell(f"mkdir -p {base}").returncode == 0
        conn = PodmanConnector("box1", container, store.podman, log_path="")

        def cleanup() -> object:
            return shell(f"rm -rf {base}")
    else:
        from tectum.providers.host.ssh import SSHConnector

        fleet: Fleet = request.getfixturevalue("fleet")
        host = fleet.host(HOST)
        base = f"/srv/tectum-conn-{secrets.token_hex(4)}"
        fleet.run(HOST, f"mkdir -p {base}", check=True)
        conn = SSHConnector(host.name, host.address, port=host.port, key_path=host.key_path,
                            known_hosts=host.known_hosts, log_path="")

        def shell(command: str) -> subprocess.CompletedProcess[str]:
            return fleet.run(HOST, command)

        def cleanup() -> object:
            return fleet.run(HOST, f"rm -rf {base}")
    if kind.endswith("-recorded"):
        conn = FakeConnector(conn)
    try:
        yield Side(kind, conn, base, shell)
    finally:
        close = getattr(conn, "close", None)
        if close is not None:
            close()
        cleanup()


# -- facts ------------------------------------------------------------------------------------

def test_stat_paths_reports_each_kind(side: Side) -> None:
    f, d, link, fifo, missing = (side.path(n) for n in ("f", "d", "l", "p", "missing"))
    side.sh(f"printf 'hello\\n' > {f} && chmod 0640 {f} && chown 4242:4343 {f} && "
            f"mkdir {d} && chmod 0750 {d} && ln -s ../somewhere {link} && mkfifo {fifo}")
    facts = side.conn.stat_paths([f, d, link, fifo, missing, f"{f}/under-a-file"])
    file_, dir_, link_, fifo_, none, not_dir = facts
    assert file_ is not None and file_.kind == "file" and file_.mode == "0640"
    assert (file_.uid, file_.gid, file_.owner, file_.group) == (4242, 4343, "4242", "4343")
    assert file_.size == 6 and file_.sha256 is None and file_.content is None
    assert dir_ is not None and dir_.kind == "directory" and dir_.mode == "0750"
    assert link_ is not None and link_.kind == "symlink" and link_.target == "../somewhere"
    assert fifo_ is not None and fifo_.kind == "other"
    assert none is None and not_dir is None
    with_content = side.conn.stat_paths([f, d], content=True)
    assert with_content[0] is not None and with_content[0].content == b"hello\n"
    assert with_content[0].sha256 == hashlib.sha256(b"hello\n").hexdigest()
    assert with_content[1] is not None and with_content[1].content is None
    assert side.conn.stat_paths([]) == []


def test_exists_does_not_follow_links(side: Side) -> None:
    dangling = side.path("dangling")
    side.sh(f"ln -s {side.path('nothing')} {dangling}")
    assert side.conn.exists(dangling) is True
    assert side.conn.exists(side.path("nothing")) is False
    assert side.conn.exists(side.base) is True


def test_reads_are_logged_as_not_mutating(side: Side) -> None:
    side.conn.stat_paths([side.base])
    side.conn.exists(side.base)
    side.conn.run(["true"], mutating=False)
    assert side.log() and not any(e["mutating"] for e in side.log())
    side.conn.make_dir(side.path("d"), mode=None, owner=None, group=None)
    assert [e["mutating"] for e in side.log()][-1] is True
    if isinstance(side.conn, FakeConnector):
        # the proxy offers exactly the batch methods its connector has (SSH: write_files)
        for extra in ("write_files", "make_dirs"):
            assert hasattr(side.conn, extra) == hasattr(side.conn.inner, extra)
        assert [c.method for c in side.conn.mutations] == ["make_dir"]
        assert [c.method for c in side.conn.calls] == ["stat_paths", "exists", "run",
                                                       "make_dir"]


# -- write_file --------------------------------------------------------------------------------

def test_write_file_new_file_gets_0644_and_the_writers_owner(side: Side) -> None:
    path = side.path("new.txt")
    side.conn.write_file(path, b"one\n", mode=None, owner=None, group=None)
    assert side.sh(f"cat {path}") == "one\n"
    uid, gid, mode, _ = side.stat(path)
    assert (uid, gid, mode) == (0, 0, "0644")
    side.conn.write_file(side.path("given.txt"), b"x", mode="0600", owner="4242", group="4343")
    assert side.stat(side.path("given.txt"))[:3] == (4242, 4343, "0600")


def test_write_file_is_atomic_and_keeps_owner_group_and_mode(side: Side) -> None:
    path, old = side.path("conf"), side.path("conf.hardlink")
    side.sh(f"printf 'old\\n' > {path} && chown 4242:4343 {path} && chmod 0640 {path} && "
            f"ln {path} {old}")
    inode = side.stat(path)[3]
    side.conn.write_file(path, b"new\n", mode=None, owner=None, group=None)
    assert side.sh(f"cat {path}") == "new\n"
    uid, gid, mode, new_inode = side.stat(path)
    assert (uid, gid, mode) == (4242, 4343, "0640")  # kept from the file it replaced
    # a new file was renamed over the path: the old inode (still linked) keeps the old text
    assert new_inode != inode and side.sh(f"cat {old}") == "old\n"
    side.conn.write_file(path, b"newer\n", mode="0600", owner=None, group="4344")
    assert side.stat(path)[:3] == (4242, 4344, "0600")
    assert side.sh(f"ls -A {side.base}").split() == ["conf", "conf.hardlink"]  # no temp files


def test_write_file_refusals_leave_the_old_file(side: Side) -> None:
    path = side.path("conf")
    side.sh(f"printf 'old\\n' > {path}")
    with pytest.raises(ValidationFailed, match="refused the new content"):
        side.conn.write_file(path, b"bad\n", mode=None, owner=None, group=None,
                             validate="grep -q good %s")
    side.conn.write_file(path, b"good\n", mode=None, owner=None, group=None,
                         validate="grep -q good %s")
    assert side.sh(f"cat {path}") == "good\n"
    with pytest.raises(ConnectorError):
        side.conn.write_file(side.path("no/such/dir/f"), b"x", mode=None, owner=None,
                             group=None)
    assert side.sh(f"ls -A {side.base}").split() == ["conf"]


# -- make_dir, make_symlink, set_attrs, remove ---------------------------------------------------

def test_make_dir_makes_missing_parents(side: Side) -> None:
    path = side.path("a/b/c")
    side.conn.make_dir(path, mode="0700", owner="4242", group=None)
    assert side.stat(path)[:3] == (4242, 0, "0700")
    assert side.stat(side.path("a"))[:3] == (0, 0, "0755")  # as mkdir -p makes parents
    with pytest.raises(ConnectorError, match="something is there|exists"):
        side.conn.make_dir(path, mode=None, owner=None, group=None)


def test_make_symlink_creates_and_replaces(side: Side) -> None:
    link = side.path("current")
    side.conn.make_symlink(link, "v1")
    assert side.sh(f"readlink {link}") == "v1\n"
    side.conn.make_symlink(link, "/elsewhere/v2")
    assert side.sh(f"readlink {link}") == "/elsewhere/v2\n"
    assert side.sh(f"ls -A {side.base}").split() == ["current"]


def test_set_attrs_changes_only_what_it_is_given(side: Side) -> None:
    path = side.path("f")
    side.sh(f"touch {path} && chmod 0600 {path}")
    side.conn.set_attrs(path, mode="0640", owner=None, group=None)
    assert side.stat(path)[:3] == (0, 0, "0640")
    side.conn.set_attrs(path, mode=None, owner="4242", group="4343")
    assert side.stat(path)[:3] == (4242, 4343, "0640")


def test_remove(side: Side) -> None:
    f, empty, tree = side.path("f"), side.path("empty"), side.path("tree")
    side.sh(f"touch {f} && mkdir {empty} && mkdir -p {tree}/a/b && touch {tree}/a/b/x")
    side.conn.remove(f)
    side.conn.remove(empty)
    side.conn.remove(side.path("never-there"))  # nothing there is no error
    with pytest.raises(ConnectorError):
        side.conn.remove(tree)  # not empty, not recursive
    side.conn.remove(tree, recursive=True)
    assert side.sh(f"ls -A {side.base}") == ""


# -- run ---------------------------------------------------------------------------------------

def test_run(side: Side) -> None:
    result = side.conn.run(["sh", "-c", 'cat; echo "$GREETING"; pwd; echo oops >&2; exit 3'],
                           input=b"in\n", env={"GREETING": "hi there"}, cwd=side.base)
    assert result.returncode == 3 and not result.ok
    assert result.stdout == f"in\nhi there\n{side.base}\n".encode()
    assert result.stderr == b"oops\n"
    assert side.conn.run(["printf", "%s", "a b;$x"]).stdout == b"a b;$x"  # no shell
    missing = side.conn.run(["tectum-no-such-program"])
    assert missing.returncode == 127
    slow = side.conn.run(["sleep", "30"], timeout=0.5)
    assert slow.returncode == 124 and b"timed out" in slow.stderr
    assert [e["mutating"] for e in side.log() if e.get("op") == "run"] == [True] * 4


# -- prefetch / forget_facts ----------------------------------------------------------------------

def test_prefetch_answers_reads_until_forget_facts(side: Side) -> None:
    f, d = side.path("f"), side.path("d")
    side.sh(f"printf 'one' > {f} && mkdir {d}")
    listing = ("ls", "-A", side.base)
    side.conn.prefetch(FactRequest(paths=(d,), content=(f,), commands=(listing,)))
    facts = side.conn.stat_paths([f], content=True)
    assert facts[0] is not None and facts[0].content == b"one"
    assert side.conn.stat_paths([d]) == side.conn.stat_paths([d])
    assert side.conn.run(list(listing), mutating=False).stdout.split() == [b"d", b"f"]
    side.conn.forget_facts()
    side.sh(f"printf 'two' > {f} && rmdir {d}")
    after = side.conn.stat_paths([f, d], content=True)
    assert after[0] is not None and after[0].content == b"two" and after[1] is None
    assert side.conn.run(list(listing), mutating=False).stdout.split() == [b"f"]
    assert not any(e["mutating"] for e in side.log())


def test_prefetch_makes_later_reads_free_over_ssh(side: Side) -> None:
    """The point of prefetch: every fact of a host in one round trip (the local connector
    has nothing to save and answers each read itself)."""
    inner = getattr(side.conn, "inner", side.conn)
    if not hasattr(inner, "round_trips"):
        pytest.skip("only an SSH connector counts round trips")
    f = side.path("f")
    side.sh(f"touch {f}")
    before = inner.round_trips
    side.conn.prefetch(FactRequest(paths=(side.base,), content=(f,), commands=(("true",),)))
    side.conn.stat_paths([f], content=True)
    side.conn.stat_paths([side.base])
    side.conn.run(["true"], mutating=False)
    side.conn.exists(f)
    assert inner.round_trips == before + 1
    side.conn.forget_facts()


# -- sweep_temp ---------------------------------------------------------------------------------

def test_sweep_temp_finds_the_leftovers_of_a_file_named_tectum_something(side: Side) -> None:
    """A regression: the local connector split a leftover's name at the first ``.tectum-``
    and never matched a file whose own name starts with ``tectum-``."""
    path = side.path("tectum-job")
    dead = int(side.sh("sh -c 'echo $$'"))
    left = side.path(f".tectum-job.tectum-{dead}-1")
    side.sh(f"touch {path} {left}")
    assert side.conn.sweep_temp([path]) == [left]
    assert side.sh(f"ls -A {side.base}").split() == ["tectum-job"]


def test_sweep_temp_removes_what_dead_writers_left(side: Side) -> None:
    path = side.path("conf")
    dead = int(side.sh("sh -c 'echo $$'"))  # a process of the target that has ended
    left = side.path(f".conf.tectum-{dead}-1")
    alive = side.path(".conf.tectum-1-1")  # PID 1 runs: a write in progress, kept
    other = side.path(f".other.tectum-{dead}-1")  # another file's: not asked for
    side.sh(f"touch {path} {left} {alive} {other}")
    removed = side.conn.sweep_temp([path])
    assert removed == [left]
    assert sorted(side.sh(f"ls -A {side.base}").split()) == sorted(
        ["conf", ".conf.tectum-1-1", f".other.tectum-{dead}-1"])
    assert side.conn.sweep_temp([path]) == []


# -- the podman connector alone -------------------------------------------------------------------

@pytest.mark.podman
@pytest.mark.skipif(os.geteuid() != 0, reason="the podman tests run podman as root")
def test_podman_connector_into_a_stopped_or_missing_container_is_unreachable(
        podman_store: PodmanStore) -> None:
    name = f"tectum-conn-stopped-{secrets.token_hex(4)}"
    start_container(podman_store, name)
    try:
        conn = PodmanConnector("box2", name, podman_store.podman, log_path="", fail_fast=True)
        conn.connect()  # running: reachable
        assert conn.run(["true"]).ok
        # a command that prints podman's words and exits as podman would is only a command
        mimic = conn.run(["sh", "-c", "echo 'Error: can only create exec sessions on running "
                          "containers: container state improper' >&2; exit 255"])
        assert mimic.returncode == 255 and conn.down is None
        podman_store.podman.run(["stop", "-t", "0", "--", name])
        with pytest.raises(HostUnreachable, match=f"container {name} .*not running"):
            conn.stat_paths(["/etc/hostname"])
        assert conn.down is not None and conn.down[0] == "unreachable"
        trips = conn.round_trips
        with pytest.raises(HostUnreachable, match=f"container {name}"):
            conn.run(["true"])  # fail_fast: known down, no podman exec again
        assert conn.round_trips == trips
        # without fail_fast each call tries; a container that is gone is unreachable too
        again = PodmanConnector("box2", name, podman_store.podman, log_path="")
        with pytest.raises(HostUnreachable, match=f"container {name}"):
            again.connect()
        podman_store.podman.run(["rm", "-f", "--", name])
        with pytest.raises(HostUnreachable, match=f"container {name}"):
            again.write_file("/tmp/x", b"x", mode=None, owner=None, group=None)
        assert again.down is None
    finally:
        podman_store.podman.run(["rm", "-f", "-t", "0", "--", name], check=False)


@pytest.mark.podman
@pytest.mark.skipif(os.geteuid() != 0, reason="the podman tests run podman as root")
def test_podman_connector_passes_shell_metacharacters_literally(
        podman_store: PodmanStore, podman_container: str, tmp_path: Any) -> None:
    shell = _podman_shell(podman_store, podman_container)
    base = f"/srv/tectum-meta-{secrets.token_hex(4)}"
    mine = f"/tmp/tectum-meta-{secrets.token_hex(4)}"  # what an injection would make
    payload = (f"$(touch {mine}) `touch {mine}`; touch {mine} && touch {mine} | "
               f"touch {mine} > {mine} '\"$HOME\" * \\ \n ${{IFS}}")
    assert shell(f"mkdir -p {base}").returncode == 0
    conn = PodmanConnector("box1", podman_container, podman_store.podman, log_path="")
    try:
        result = conn.run(["printf", "%s", payload], env={"VALUE": payload},
                          cwd=base)
        assert result.ok and result.stdout == payload.encode()
        echoed = conn.run(["sh", "-c", 'printf %s "$VALUE"'], env={"VALUE": payload})
        assert echoed.stdout == payload.encode()
        # a path holding them: one file of exactly that name
        odd = f"{base}/$(touch {mine.rsplit('/', 1)[1]}); `id` 'q' \"$HOME\" *"
        conn.write_file(odd, payload.encode(), mode=None, owner=None, group=None)
        facts = conn.stat_paths([odd], content=True)
        assert facts[0] is not None and facts[0].content == payload.encode()
        assert shell(f"ls -A {base}").stdout == odd.rsplit("/", 1)[1] + "\n"
        assert shell(f"test -e {mine} || test -e {base}/{mine.rsplit('/', 1)[1]}"
                     ).returncode == 1
        assert not os.path.exists(mine)  # nor on this machine
    finally:
        shell(f"rm -rf {base} {mine}")
        conn.close()
