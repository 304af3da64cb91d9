"""The SSH connector against a real fleet of Debian hosts (``tests.harness.fleet``; no mocks).

host1 takes the ordinary tests, host2 gets ``sudo`` (through the fleet's apt cache) and a
non-root user for the ``become`` tests, host3 is stopped, started and has its host key
regenerated. Every path a test makes lives under its own ``/srv/tectum-ssh/<hex>`` directory.
Facts are compared with :class:`LocalConnector` reading the same inodes through the host's overlay
upper directory (byte-exact, sizes included) and an identically built local tree.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncssh
import pytest

import tectum.providers.host.ssh as ssh_module
from tectum.plans.plan import Action, ResourceChange
from tectum.providers.host.base import HostType
from tectum.providers.host.command import CommandType
from tectum.providers.host.connector import Connector, ConnectorError, LocalConnector, PathFact
from tectum.providers.host.files import DirectoryType, FileType, SymlinkType
from tectum.providers.host.ssh import (
    BecomeFailed,
    HostKeyChanged,
    HostKeyUnknown,
    HostUnreachable,
    SSHConnector,
)
from tectum.providers.host.users import GroupType, UserType
from tests.harness.fleet import HOST_KEY, Fleet, Host

pytestmark = [
    pytest.mark.fleet,
    pytest.mark.skipif(os.geteuid() != 0, reason="the fleet harness needs root"),
]

PASSWORD = "s3cr3t pa$$ 'q' \"dq\" `x` ;&| \\ ü"
DEPLOY = "deploy"


# -- fixtures and helpers ------------------------------------------------------------------

def _plain(log: list[dict[str, object]]) -> list[dict[str, object]]:
    """Log entries without the ``host`` field (compared with expectations or another host)."""
    return [{k: v for k, v in e.items() if k != "host"} for e in log]


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    with Fleet(3, apt=True) as fleet:
        yield fleet


def connector(host: Host, **kwargs: Any) -> SSHConnector:
    options: dict[str, Any] = {"key_path": host.key_path, "known_hosts": host.known_hosts,
                               "log_path": ""}
    options.update(kwargs)
    return SSHConnector(host.name, host.address, port=host.port, **options)


@pytest.fixture
def conn(fleet: Fleet) -> Iterator[SSHConnector]:
    c = connector(fleet.hosts[0])
    yield c
    c.close()


@pytest.fixture
def base(fleet: Fleet) -> Iterator[str]:
    """A fresh directory on host1."""
    path = f"/srv/tectum-ssh/{secrets.token_hex(4)}"
    fleet.run("host1", f"mkdir -p {path}", check=True)
    yield path
    fleet.run("host1", f"rm -rf {path}")


def upper(fleet: Fleet, name: str, path: str) -> Path:
    """PATH on host NAME as seen from this machine (the overlay's upper directory)."""
    return fleet.upper(name) / path.lstrip("/")


def mutations(conn: SSHConnector | LocalConnector) -> list[dict[str, object]]:
    return [e for e in _plain(conn.log) if e["mutating"]]


def remote_sha256(fleet: Fleet, name: str, path: str) -> str:
    out = fleet.run(name, f"sha256sum < '{path}'", check=True).stdout
    return out.split()[0]


def plan_one(rt: HostType, conn: Connector, attrs: dict[str, Any],
             prior: dict[str, Any] | None = None) -> ResourceChange:
    desired = rt.prepare(attrs, "/")
    observed = rt.read_objects(conn, [desired])[0]
    action, changes = rt.plan(desired, observed, prior)
    before = observed if rt.name == "command" else (
        rt.stored(observed) if observed is not None else None)
    return ResourceChange(address=f"{rt.name}.x", type=rt.name, action=action, before=before,
                          after=desired, changes=changes, prior=prior)


def converge(rt: HostType, conn: Connector, attrs: dict[str, Any],
             prior: dict[str, Any] | None = None) -> tuple[Action, dict[str, Any] | None]:
    change = plan_one(rt, conn, attrs, prior)
    if change.action is Action.NOOP:
        return change.action, prior
    return change.action, rt.apply(conn, change)


def delete(rt: HostType, conn: Connector, prior: dict[str, Any]) -> None:
    change = ResourceChange(address=f"{rt.name}.x", type=rt.name, action=Action.DELETE,
                            before=prior, after=None, changes=[], prior=prior)
    assert rt.apply(conn, change) is None


# -- run -----------------------------------------------------------------------------------

def test_run_exit_codes_stdin_env_cwd(conn: SSHConnector, base: str) -> None:
    conn.connect()
    start = conn.round_trips
    res = conn.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (res.returncode, res.stdout, res.stderr) == (3, b"out\n", b"err\n")
    assert conn.round_trips == start + 1

    blob = bytes(range(256)) * 4096 + b"\nno newline at the end"
    res = conn.run(["cat"], input=blob, mutating=False)
    assert res.ok and res.stdout == blob
    assert conn.run(["cat"]).stdout == b""  # no input: stdin is empty, not inherited

    res = conn.run(["sh", "-c", 'printf "%s|%s|%s" "$A" "$B" "$LC_ALL"'],
                   env={"A": "a b 'c' $(x) `y`", "B": "line\nbreak"})
    assert res.stdout == b"a b 'c' $(x) `y`|line\nbreak|C"

    spaced = f"{base}/a dir; with 'quotes'"
    conn.make_dir(spaced, mode=None, owner=None, group=None)
    res = conn.run(["pwd", "-P"], cwd=spaced)
    assert res.stdout == spaced.encode() + b"\n"

    missing = conn.run(["pwd"], cwd=f"{base}/missing")
    assert missing.returncode == 127
    assert conn.run(["no-such-program-tectum"]).returncode == 127
    assert conn.run(["sh", "-c", "kill -TERM $$"]).returncode == -15  # like subprocess
    conn.write_file(f"{base}/a=b", b"#!/bin/sh\necho \"$0 $1\"\n", mode="0755", owner=None,
                    group=None)
    assert conn.run([f"{base}/a=b", "x=y"]).stdout == f"{base}/a=b x=y\n".encode()

    assert _plain(conn.log)[-1] == {"op": "run", "mutating": True, "argv": [f"{base}/a=b", "x=y"]}
    assert {"op": "run", "mutating": False, "argv": ["cat"]} in _plain(conn.log)
    assert conn.connects == 1


def test_run_matches_local_connector(conn: SSHConnector, tmp_path: Path) -> None:
    local = LocalConnector(log_path="")
    for argv, data in [
        (["printf", "%s\\n", "a", "b c", "-n", "$HOME"], None),
        (["sh", "-c", 'echo "$#:$1:$2"', "sh", "x y", ""], None),
        (["tr", "a-z", "A-Z"], b"hello\x00world"),
        (["sh", "-c", "exit 42"], None),
    ]:
        mine, theirs = conn.run(argv, input=data), local.run(argv, input=data)
        assert (mine.returncode, mine.stdout, mine.stderr) == \
            (theirs.returncode, theirs.stdout, theirs.stderr), argv
    assert [e for e in _plain(conn.log)] == [e for e in _plain(local.log)]


def test_run_timeout_kills_the_command_and_its_children(fleet: Fleet,
                                                        conn: SSHConnector) -> None:
    started = time.monotonic()
    res = conn.run(["sh", "-c", "sleep 37; echo never"], timeout=1)
    took = time.monotonic() - started
    assert res.returncode == 124 and res.stderr == b"timed out after 1 s" and res.stdout == b""
    assert took < 5, took
    time.sleep(0.3)
    procs = fleet.run("host1", "ps -eo args", check=True).stdout
    assert "sleep 37" not in procs
    assert conn.run(["true"], timeout=5).ok  # the connection is still good


def test_concurrent_calls_share_one_connection(conn: SSHConnector, base: str) -> None:
    def work(i: int) -> None:
        path = f"{base}/f{i}"
        data = secrets.token_bytes(1000 + i)
        conn.write_file(path, data, mode=None, owner=None, group=None)
        res = conn.run(["cat", path])
        assert res.stdout == data
        fact = conn.stat_paths([path], content=True)[0]
        assert fact is not None and fact.content == data

    with ThreadPoolExecutor(max_workers=24) as pool:
        list(pool.map(work, range(60)))
    assert conn.connects == 1
    assert conn.round_trips == 180


def test_close_flushes_the_command_log(fleet: Fleet, tmp_path: Path) -> None:
    log = tmp_path / "commands.jsonl"
    c = connector(fleet.hosts[0], log_path=str(log))
    c.run(["true"], mutating=False)
    c.close()
    assert _plain([json.loads(line) for line in log.read_text().splitlines()]) == \
        [{"op": "run", "mutating": False, "argv": ["true"]}]
    assert c.log == []
    assert c.run(["true"]).ok and c.connects == 2  # usable again after close
    c.close()


# -- facts ---------------------------------------------------------------------------------

TREE = r"""set -eu
b=$1
mkdir -p "$b"
cd "$b"
printf 'hello\n' > plain
printf 'x' > 'with space'
printf 'nl' > "$(printf 'new\nline')"
printf 'q' > "quote'\"s"
printf 'd' > -leading
printf 'b' > 'back\slash'
printf 'u' > 'ünï €'
printf 'g' > 'glob*?[x]'
printf 'i' > '$(touch pwned) `x` ;&|'
printf '\377\376\000\001binary\200\n\r' > binary
: > empty
printf 'n' > "$(printf 'bad\377name')"
mkdir sub
chmod 2750 sub
mkdir sticky
chmod 1777 sticky
printf 's' > sub/suid
chmod 4755 sub/suid
printf 'p' > private
chmod 0600 private
ln -s plain link
ln -s 'with space' 'link to space'
ln -s /nonexistent/target dangling
ln -s sub dirlink
ln -s "$(printf 'odd -> \ntarget')" oddlink
ln plain hardlink
mkfifo fifo
printf 'o' > owned
chown 1:12345 owned
"""

NAMES = [
    "", "plain", "with space", "new\nline", "quote'\"s", "-leading", "back\\slash", "ünï €",
    "glob*?[x]", "$(touch pwned) `x` ;&|", "binary", "empty", os.fsdecode(b"bad\xffname"),
    "sub", "sub/", "sub/suid", "sticky", "private", "link", "link to space", "dangling",
    "dirlink", "dirlink/", "oddlink", "hardlink", "fifo", "owned",
    "missing", "plain/below", "missing/deeper", "sub/../plain", "sub//suid",
]


def tree_paths(root: str) -> list[str]:
    return [root if not n else f"{root}/{n}" for n in NAMES]


@pytest.mark.parametrize("content", [True, False])
def test_stat_paths_parity_in_one_round_trip(fleet: Fleet, conn: SSHConnector, base: str,
                                             tmp_path: Path, content: bool) -> None:
    root = f"{base}/tree"
    fleet.run("host1", f"sh -s -- {root}", input=TREE, check=True)
    conn.connect()
    before = conn.round_trips
    remote = conn.stat_paths(tree_paths(root), content=content)
    assert conn.round_trips == before + 1
    assert conn.log == []  # reads are not mutations (and LocalConnector does not log them)

    # the very same inodes, read locally through the overlay's upper directory
    local = LocalConnector(log_path="")
    same = local.stat_paths(tree_paths(str(upper(fleet, "host1", root))), content=content)
    assert remote == same

    # an identically built local tree: equal except directory sizes (filesystem-specific)
    subprocess.run(["sh", "-s", "--", str(tmp_path / "tree")], input=TREE.encode(),
                   check=True, capture_output=True)
    built = local.stat_paths(tree_paths(str(tmp_path / "tree")), content=content)

    def masked(facts: list[PathFact | None]) -> list[PathFact | None]:
        return [f._replace(size=0) if f is not None and f.kind == "directory" else f
                for f in facts]

    assert masked(remote) == masked(built)

    facts = dict(zip(NAMES, remote))
    assert facts["missing"] is None and facts["plain/below"] is None
    assert facts["sub"] == PathFact("directory", "2750", "root", "root",
                                    facts["sub"].size if facts["sub"] else 0, uid=0, gid=0)
    assert facts["sticky"] is not None and facts["sticky"].mode == "1777"
    assert facts["sub/suid"] is not None and facts["sub/suid"].mode == "4755"
    assert facts["oddlink"] == PathFact("symlink", "0777", "root", "root",
                                        len("odd -> \ntarget"), target="odd -> \ntarget",
                                        uid=0, gid=0)
    assert facts["fifo"] is not None and facts["fifo"].kind == "other"
    owned = facts["owned"]
    assert owned is not None and (owned.owner, owned.group, owned.uid, owned.gid) == \
        ("daemon", "12345", 1, 12345)
    binary = facts["binary"]
    assert binary is not None
    if content:
        assert binary.content == b"\xff\xfe\x00\x01binary\x80\n\r"
        assert binary.sha256 == hashlib.sha256(binary.content).hexdigest()
        assert facts["empty"] == PathFact("file", "0644", "root", "root", 0,
                                          hashlib.sha256(b"").hexdigest(), b"", uid=0, gid=0)
    else:
        assert binary.content is None and binary.sha256 is None


def test_stat_paths_of_many_paths_and_big_files_is_one_round_trip(
        fleet: Fleet, conn: SSHConnector, base: str) -> None:
    fleet.run("host1", f"cd {base} && for i in $(seq 1 400); do echo $i > f$i; done && "
              f"head -c 5000000 /dev/urandom > big", check=True)
    paths = [f"{base}/f{i}" for i in range(1, 401)] + [f"{base}/big", f"{base}/nope"]
    conn.connect()
    before = conn.round_trips
    facts = conn.stat_paths(paths, content=True)
    assert conn.round_trips == before + 1
    assert [f.content for f in facts[:400] if f is not None] == \
        [f"{i}\n".encode() for i in range(1, 401)]
    big = facts[400]
    assert big is not None and big.size == 5000000
    assert big.sha256 == remote_sha256(fleet, "host1", f"{base}/big")
    assert facts[401] is None


# -- mutations -----------------------------------------------------------------------------

def test_write_file_is_byte_exact_atomic_and_one_round_trip(fleet: Fleet, conn: SSHConnector,
                                                            base: str) -> None:
    conn.connect()
    cases = {
        "all-bytes": bytes(range(256)) * 3,
        "empty": b"",
        "not-utf8": b"\xff\xfe\xc3\x28 latin-1 \xe9\n\x00",
        "trailing-newlines": b"x\n\n\n",
        "big": os.urandom(5 * 1024 * 1024),
    }
    for name, data in cases.items():
        before = conn.round_trips
        conn.write_file(f"{base}/{name}", data, mode=None, owner=None, group=None)
        assert conn.round_trips == before + 1
        assert (upper(fleet, "host1", base) / name).read_bytes() == data
        assert remote_sha256(fleet, "host1", f"{base}/{name}") == hashlib.sha256(data).hexdigest()
    assert _plain(conn.log)[-1] == {"op": "write", "mutating": True, "path": f"{base}/big",
                            "bytes": 5 * 1024 * 1024}

    path = f"{base}/conf"
    conn.write_file(path, b"one", mode="0640", owner="daemon", group="12345")
    fact = conn.stat_paths([path], content=True)[0]
    assert fact == PathFact("file", "0640", "daemon", "12345", 3,
                            hashlib.sha256(b"one").hexdigest(), b"one", uid=1, gid=12345)
    # mode/owner None keep what the replaced file had (as LocalConnector does)
    conn.write_file(path, b"two!", mode=None, owner=None, group=None)
    fact = conn.stat_paths([path], content=True)[0]
    assert fact is not None and (fact.mode, fact.owner, fact.group, fact.content) == \
        ("0640", "daemon", "12345", b"two!")
    # an owner alone: the group is kept from the file replaced (issue 10), as with
    # LocalConnector; the set-id bit survives the chown
    conn.write_file(path, b"3", mode="4711", owner="0", group=None)
    fact = conn.stat_paths([path])[0]
    assert fact is not None and (fact.mode, fact.owner, fact.group) == ("4711", "root", "12345")
    # a mode alone keeps both
    conn.write_file(path, b"4", mode="0640", owner="daemon", group=None)
    conn.write_file(path, b"5", mode="0600", owner=None, group=None)
    fact = conn.stat_paths([path])[0]
    assert fact is not None and (fact.mode, fact.owner, fact.group) == \
        ("0600", "daemon", "12345")
    leftovers = [p for p in os.listdir(upper(fleet, "host1", base)) if ".tectum-" in p]
    assert leftovers == []


def test_failed_big_write_fails_fast_and_leaves_nothing(fleet: Fleet, conn: SSHConnector,
                                                        base: str) -> None:
    started = time.monotonic()
    with pytest.raises(ConnectorError, match="directory .*/nodir does not exist"):
        conn.write_file(f"{base}/nodir/big", os.urandom(5 * 1024 * 1024), mode=None,
                        owner=None, group=None)
    with pytest.raises(ConnectorError, match="does not exist on this host"):
        conn.write_file(f"{base}/big", os.urandom(5 * 1024 * 1024), mode=None,
                        owner="no-such-user", group=None)
    assert time.monotonic() - started < 10
    assert os.listdir(upper(fleet, "host1", base)) == []
    assert conn.run(["true"]).ok


def test_write_over_a_symlink_replaces_the_link_not_its_target(fleet: Fleet,
                                                               conn: SSHConnector,
                                                               base: str) -> None:
    conn.write_file(f"{base}/victim", b"do not touch\n", mode="0600", owner=None, group=None)
    conn.make_symlink(f"{base}/f", "victim")
    conn.write_file(f"{base}/f", b"mine\n", mode=None, owner=None, group=None)
    facts = conn.stat_paths([f"{base}/f", f"{base}/victim"], content=True)
    assert facts[0] is not None and (facts[0].kind, facts[0].content) == ("file", b"mine\n")
    assert facts[0].mode == "0644"  # not the link's 0777
    assert facts[1] is not None and facts[1].content == b"do not touch\n"


KILLED_WRITER = """
import sys
from tectum.providers.host.ssh import SSHConnector
host, address, key, known, path, how = sys.argv[1:]
c = SSHConnector(host, address, key_path=key, known_hosts=known)
big = b"N" * (300 * 1024 * 1024)
if how == "one":
    c.write_file(path, big, mode=None, owner=None, group=None)
else:
    c.write_files([(path + ".new", b"small", None, None, None), (path, big, None, None, None)])
"""


@pytest.mark.parametrize("how", ["one", "many"])
def test_client_killed_mid_write_commits_nothing(fleet: Fleet, conn: SSHConnector,
                                                 base: str, how: str) -> None:
    host = fleet.hosts[0]
    path = f"{base}/victim"
    conn.write_file(path, b"old\n", mode=None, owner=None, group=None)
    local_dir = upper(fleet, "host1", base)
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, host.name, host.address,
                               str(host.key_path), str(host.known_hosts), path, how])
    try:
        deadline = time.monotonic() + 30
        while not [p for p in os.listdir(local_dir) if ".tectum-" in p]:
            assert writer.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.2)
    finally:
        writer.kill()
        writer.wait()
    deadline = time.monotonic() + 15
    while [p for p in os.listdir(local_dir) if ".tectum-" in p]:  # the host cleans up
        assert time.monotonic() < deadline, os.listdir(local_dir)
        time.sleep(0.05)
    fact = conn.stat_paths([path], content=True)[0]
    assert fact is not None and fact.content == b"old\n"
    assert not conn.exists(path + ".new")  # nothing of the batch was committed
    assert conn.sweep_temp([path]) == []


def test_sweep_temp_removes_only_what_dead_writers_left(fleet: Fleet, conn: SSHConnector,
                                                        base: str) -> None:
    odd = "with space\nand 'quote' *"
    fleet.run("host1", f"""cd {base} && touch .f.tectum-999999-a f.tectum-999998-b \\
              .f.tectum-1-live .other.tectum-999999-c f.tectum-notapid \\
              "$(printf '.with space\\nand %s *.tectum-999997-d' "'quote'")" && \\
              ln -s dangling f.tectum-999996-e && \
              mkdir .tectum-999995-f .tectum-1-g .f.tectum-999994-h && \
              touch .tectum-999995-f/f .tectum-1-g/f""", check=True)
    before = sorted(os.listdir(upper(fleet, "host1", base)))
    assert len(before) == 10, before
    conn.connect()
    rounds = conn.round_trips
    removed = conn.sweep_temp([f"{base}/f", f"{base}/{odd}", f"{base}/f"])
    assert conn.round_trips == rounds + 1
    # write_files' staging directory of a dead writer goes with its contents; a live one's and
    # a directory under a file's temporary name stay
    assert sorted(removed) == sorted([f"{base}/.f.tectum-999999-a", f"{base}/f.tectum-999998-b",
                                      f"{base}/f.tectum-999996-e",
                                      f"{base}/.{odd}.tectum-999997-d",
                                      f"{base}/.tectum-999995-f"])
    assert sorted(os.listdir(upper(fleet, "host1", base))) == \
        [".f.tectum-1-live", ".f.tectum-999994-h", ".other.tectum-999999-c", ".tectum-1-g",
         "f.tectum-notapid"]
    assert [e for e in _plain(conn.log) if e["op"] == "remove"] == [
        {"op": "remove", "mutating": True, "path": p, "recursive": p.endswith("-f")}
        for p in removed]
    assert conn.sweep_temp([f"{base}/f"]) == []


def test_write_replaces_atomically_while_read(fleet: Fleet, conn: SSHConnector,
                                              base: str) -> None:
    """A reader looping on the host never sees anything but a whole old or new file."""
    path = f"{base}/watched"
    old, new = b"A" * 300000, b"B" * 200000
    conn.write_file(path, old, mode=None, owner=None, group=None)
    watcher = subprocess.Popen(fleet.ssh_command(
        "host1", f"i=0; while [ $i -lt 300 ]; do wc -c < {path}; i=$((i+1)); done"),
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    for _ in range(10):
        conn.write_file(path, new, mode=None, owner=None, group=None)
        conn.write_file(path, old, mode=None, owner=None, group=None)
    out, _ = watcher.communicate(timeout=120)
    sizes = {int(s) for s in out.split()}
    assert sizes <= {300000, 200000}, sizes


def test_dirs_attrs_symlinks_and_remove(fleet: Fleet, conn: SSHConnector, base: str) -> None:
    conn.connect()
    rounds = conn.round_trips
    d = f"{base}/d"
    conn.make_dir(d, mode="2750", owner="daemon", group="daemon")
    conn.make_dir(f"{d}/plain", mode=None, owner=None, group=None)
    conn.set_attrs(d, mode="0700", owner=None, group="12345")
    conn.write_file(f"{d}/file", b"data", mode="0600", owner=None, group=None)
    conn.make_symlink(f"{base}/link", "d/file")
    conn.make_symlink(f"{base}/link", "d/other target")   # atomic replace of a symlink
    conn.make_symlink(f"{d}/file", "/etc/hostname")          # ... and of a file
    assert conn.round_trips == rounds + 7
    facts = conn.stat_paths([d, f"{d}/plain", f"{base}/link", f"{d}/file"])
    assert facts[0] is not None and (facts[0].mode, facts[0].owner, facts[0].group) == \
        ("0700", "daemon", "12345")  # 5-digit chmod: the set-gid bit is cleared exactly
    # (the parent's set-gid bit is inherited, by the kernel's rule)
    assert facts[1] is not None and (facts[1].kind, facts[1].mode) == ("directory", "2755")
    assert facts[2] == PathFact("symlink", "0777", "root", "root", 14, target="d/other target",
                                uid=0, gid=0)
    assert facts[3] is not None and facts[3].target == "/etc/hostname"

    conn.set_attrs(f"{d}/file", mode=None, owner="daemon", group=None)  # chown -h: the link
    link = conn.stat_paths([f"{d}/file"])[0]
    assert link is not None and link.owner == "daemon"
    assert conn.stat_paths(["/etc/hostname"])[0].owner == "root"  # type: ignore[union-attr]

    with pytest.raises(ConnectorError, match="Directory not empty"):
        conn.remove(d)
    conn.remove(f"{base}/link")
    conn.remove(f"{base}/link")  # already gone: fine
    conn.remove(d, recursive=True)
    assert conn.stat_paths([d, f"{base}/link"]) == [None, None]
    assert not conn.exists(d) and conn.exists(base)
    assert [e["op"] for e in mutations(conn)][-4:] == ["remove"] * 4
    assert [p for p in os.listdir(upper(fleet, "host1", base)) if ".tectum-" in p] == []


def test_error_texts_match_the_local_connector(conn: SSHConnector, base: str,
                                               tmp_path: Path) -> None:
    local = LocalConnector(log_path="")

    def failures(c: Connector, root: str) -> list[str]:
        c.make_dir(f"{root}/full", mode=None, owner=None, group=None)
        c.write_file(f"{root}/full/x", b"x", mode=None, owner=None, group=None)
        c.write_file(f"{root}/file", b"x", mode=None, owner=None, group=None)
        attempts: list[Callable[[], object]] = [
            lambda: c.write_file(f"{root}/nodir/x", b"", mode=None, owner=None, group=None),
            lambda: c.write_file(f"{root}/full", b"", mode=None, owner=None, group=None),
            lambda: c.write_file(f"{root}/u", b"", mode=None, owner="no-such-user", group=None),
            lambda: c.write_file(f"{root}/g", b"", mode=None, owner=None, group="no-such-grp"),
            lambda: c.set_attrs(f"{root}/missing", mode="0644", owner=None, group=None),
            lambda: c.set_attrs(f"{root}/file", mode=None, owner="no-such-user", group=None),
            lambda: c.make_dir(f"{root}/full", mode=None, owner=None, group=None),
            lambda: c.make_dir(f"{root}/file", mode=None, owner=None, group=None),
            lambda: c.make_dir(f"{root}/file/a/b", mode=None, owner=None, group=None),
            lambda: c.make_dir(f"{root}/file/sub", mode=None, owner=None, group=None),
            lambda: c.make_symlink(f"{root}/full", "x"),
            lambda: c.make_symlink(f"{root}/nodir/l", "x"),
            lambda: c.remove(f"{root}/full"),
            lambda: c.remove(f"{root}/file/x"),
        ]
        out = []
        for attempt in attempts:
            try:
                attempt()
                out.append("no error")
            except ConnectorError as exc:
                out.append(str(exc).replace(root, "<root>"))
        return out

    mine = failures(conn, base)
    theirs = failures(local, str(tmp_path))
    assert mine == theirs
    assert all(m != "no error" for m in mine), mine


# -- host keys and reachability --------------------------------------------------------------

def host_fingerprint(fleet: Fleet, name: str) -> str:
    pub = upper(fleet, name, HOST_KEY + ".pub").read_text()
    return asyncssh.import_public_key(pub).get_fingerprint("sha256")


def test_unknown_host_key_is_refused_unless_trusted(fleet: Fleet, tmp_path: Path) -> None:
    host = fleet.hosts[0]
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    fingerprint = host_fingerprint(fleet, host.name)
    for known in (empty, tmp_path / "does-not-exist"):
        c = connector(host, known_hosts=known)
        with pytest.raises(HostKeyUnknown) as info:
            c.run(["true"])
        message = str(info.value)
        assert host.name in message and host.address in message and fingerprint in message
        assert "trust_unknown" in message and str(known) in message
        assert info.value.fingerprint == fingerprint
        assert c.round_trips == 0 and c.connects == 0
        c.close()

    c = connector(host, known_hosts=empty, trust_unknown=True)
    assert c.run(["hostname"]).stdout == b"host1\n"
    assert c.trusted_unknown_key == fingerprint == c.host_key_fingerprint
    assert empty.read_text() == ""  # trust on first use is for this run: nothing is written
    c.close()

    c = connector(host)  # the fleet's known_hosts: verified, nothing trusted blindly
    assert c.run(["true"]).ok and c.trusted_unknown_key is None
    assert c.host_key_fingerprint == fingerprint
    c.close()


def test_changed_host_key_is_refused_even_with_trust_unknown(fleet: Fleet,
                                                             tmp_path: Path) -> None:
    host = fleet.hosts[0]
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().split()
    forged = tmp_path / "known_hosts"
    forged.write_text(f"{host.address} {other[0]} {other[1]}\n")
    recorded = asyncssh.import_public_key(" ".join(other[:2])).get_fingerprint("sha256")
    for trust in (False, True):
        c = connector(host, known_hosts=forged, trust_unknown=trust)
        with pytest.raises(HostKeyChanged) as info:
            c.run(["true"])
        message = str(info.value)
        assert "CHANGED" in message and host.name in message and host.address in message
        assert message.count(host_fingerprint(fleet, host.name)) == 1
        # each recorded key once (issue 10 item 14: the address's line was printed twice)
        assert message.count(recorded) == 1, message
        assert f"records ssh-ed25519 {recorded} for it" in message, message
        assert "ssh-keygen -R" in message
        c.close()
    # two keys recorded (the name's line and the address's): each is named, once
    second = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().split()
    forged.write_text(f"{host.address} {other[0]} {other[1]}\n"
                      f"{host.address} {second[0]} {second[1]}\n"
                      f"{host.address} {other[0]} {other[1]}\n")
    prints = [asyncssh.import_public_key(" ".join(k[:2])).get_fingerprint("sha256")
              for k in (other, second)]
    c = connector(host, known_hosts=forged)
    with pytest.raises(HostKeyChanged) as info:
        c.run(["true"])
    assert [str(info.value).count(p) for p in prints] == [1, 1], str(info.value)
    c.close()


def test_regenerated_host_key_is_refused(fleet: Fleet, tmp_path: Path) -> None:
    host = fleet.host("host3")
    old_known = tmp_path / "known_hosts.old"
    shutil.copy(host.known_hosts, old_known)
    tofu = connector(host, known_hosts=tmp_path / "none", trust_unknown=True)
    assert tofu.run(["true"]).ok
    old_print = host_fingerprint(fleet, "host3")
    fleet.stop_host("host3")
    try:
        for suffix in ("", ".pub"):
            upper(fleet, "host3", HOST_KEY + suffix).unlink()
    finally:
        fleet.start_host("host3")  # boots with a new key; the fleet's known_hosts follows
    new_print = host_fingerprint(fleet, "host3")
    assert new_print != old_print

    c = connector(host, known_hosts=old_known, trust_unknown=True)
    with pytest.raises(HostKeyChanged) as info:
        c.run(["true"])
    assert str(info.value).count(new_print) == 1 and str(info.value).count(old_print) == 1
    c.close()
    # the connector that trusted the first key reconnects and refuses the new one
    with pytest.raises(HostKeyChanged):
        tofu.run(["true"])
    tofu.close()
    c = connector(host)
    assert c.run(["true"]).ok
    c.close()


def test_unreachable_host_fails_fast_and_reconnects_later(fleet: Fleet) -> None:
    host = fleet.host("host3")
    c = connector(host, connect_timeout=1.0)
    assert c.run(["true"]).ok
    fleet.stop_host("host3")
    try:
        started = time.monotonic()
        with pytest.raises(HostUnreachable) as info:
            c.run(["true"])
        assert time.monotonic() - started < 4
        assert host.address in str(info.value) and "host3" in str(info.value)
        fresh = connector(host, connect_timeout=1.0)
        started = time.monotonic()
        with pytest.raises(HostUnreachable):
            fresh.stat_paths(["/etc"])
        assert time.monotonic() - started < 4
        fresh.close()
    finally:
        fleet.start_host("host3")
    fleet.stop_host("host3", keep_network=True)  # port closed: refused at once
    try:
        started = time.monotonic()
        with pytest.raises(HostUnreachable, match="refused"):
            c.run(["true"])
        assert time.monotonic() - started < 2
    finally:
        fleet.start_host("host3")
    assert c.run(["hostname"]).stdout == b"host3\n"
    assert c.connects == 2
    c.close()


# -- become ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sudo_host(fleet: Fleet) -> Host:
    """host2 with sudo installed from the fleet's apt cache and a sudoer with a password."""
    host = fleet.host("host2")
    res = fleet.run("host2", "apt-get update -q >/dev/null 2>&1; DEBIAN_FRONTEND=noninteractive "
                    "apt-get install -y -q sudo >/dev/null 2>&1; command -v sudo", timeout=600)
    if res.returncode != 0:
        pytest.skip(f"cannot install sudo on the test host: {res.stdout}{res.stderr}")
    fleet.run("host2", f"useradd -m -s /bin/sh -G sudo {DEPLOY} && "
              f"install -d -m 700 -o {DEPLOY} -g {DEPLOY} /home/{DEPLOY}/.ssh && "
              f"install -m 600 -o {DEPLOY} -g {DEPLOY} /root/.ssh/authorized_keys "
              f"/home/{DEPLOY}/.ssh/authorized_keys", check=True)
    fleet.run("host2", "chpasswd", input=f"{DEPLOY}:{PASSWORD}\n", check=True)
    return host


@pytest.fixture
def become(sudo_host: Host) -> Iterator[SSHConnector]:
    c = connector(sudo_host, user=DEPLOY, become=True, become_password=PASSWORD)
    yield c
    c.close()


def test_without_become_the_user_is_not_root(sudo_host: Host) -> None:
    c = connector(sudo_host, user=DEPLOY)
    assert c.run(["id", "-un"]).stdout == b"deploy\n"
    with pytest.raises(ConnectorError, match="Permission denied"):
        c.write_file("/etc/tectum-denied", b"x", mode=None, owner=None, group=None)
    c.close()


def test_become_runs_as_root_with_exact_stdin(become: SSHConnector) -> None:
    res = become.run(["id", "-un"])
    assert (res.returncode, res.stdout, res.stderr) == (0, b"root\n", b"")
    data = PASSWORD.encode() + b"\n" + bytes(range(256)) + b"\nlast line without newline"
    assert become.run(["cat"], input=data).stdout == data
    assert become.run(["cat"]).stdout == b""
    res = become.run(["sh", "-c", 'echo "$V"; pwd; exit 5'], env={"V": "x y"}, cwd="/root")
    assert (res.returncode, res.stdout) == (5, b"x y\n/root\n")
    assert become.run(["sleep", "30"], timeout=1).returncode == 124

    path = f"/etc/tectum-{secrets.token_hex(3)}"
    become.write_file(path, b"root only\n", mode="0600", owner=None, group=None)
    fact = become.stat_paths([path, "/root/.ssh/authorized_keys"], content=True)
    assert fact[0] == PathFact("file", "0600", "root", "root", 10,
                               hashlib.sha256(b"root only\n").hexdigest(), b"root only\n",
                               uid=0, gid=0)
    assert fact[1] is not None and fact[1].content  # unreadable for deploy without sudo
    become.remove(path)
    assert not become.exists(path)


def test_become_password_never_in_process_list_or_log(fleet: Fleet, sudo_host: Host,
                                                      become: SSHConnector) -> None:
    become.connect()
    secret = PASSWORD.encode()
    seen: list[bytes] = []
    host_ps: list[str] = []
    stop = threading.Event()

    def sample_machine() -> None:  # the hosts' processes are visible from here too
        while not stop.is_set():
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    try:
                        seen.append(Path(f"/proc/{pid}/cmdline").read_bytes())
                    except OSError:
                        pass
            time.sleep(0.005)

    def sample_host() -> None:
        while not stop.is_set():
            host_ps.append(fleet.run("host2", "ps -eo args").stdout)

    threads = [threading.Thread(target=sample_machine), threading.Thread(target=sample_host)]
    for t in threads:
        t.start()
    try:
        become.run(["sleep", "1.5"])
        become.write_file("/root/tectum-secret-test", b"x" * 100000, mode=None, owner=None,
                          group=None)
        become.stat_paths(["/root/tectum-secret-test"], content=True)
        become.run(["sleep", "1"], mutating=False)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert any(b"sudo" in s and b"sleep" in s for s in seen), "the sampler missed the command"
    assert any("sleep 1.5" in p for p in host_ps), "the host-side sampler missed the command"
    assert not [s for s in seen if secret in s]
    assert not [p for p in host_ps if PASSWORD in p]
    assert PASSWORD not in json.dumps(become.log)
    assert PASSWORD not in repr(become)
    assert {"op": "run", "mutating": True, "argv": ["sleep", "1.5"]} in _plain(become.log)


def test_wrong_become_password_fails_without_revealing_it(sudo_host: Host) -> None:
    wrong = "wrong-" + secrets.token_hex(4)
    c = connector(sudo_host, user=DEPLOY, become=True, become_password=wrong)
    with pytest.raises(BecomeFailed) as info:
        c.run(["true"])
    assert wrong not in str(info.value) and DEPLOY in str(info.value)
    c.close()
    c = connector(sudo_host, user=DEPLOY, become=True)  # no password: sudo -n
    with pytest.raises(BecomeFailed, match="password"):
        c.run(["true"])
    c.close()


def test_become_when_sudo_does_not_ask(sudo_host: Host) -> None:
    """Root needs no password: the password line must not leak into the command's stdin."""
    c = connector(sudo_host, become=True, become_password=PASSWORD)
    assert c.run(["cat"], input=b"just this").stdout == b"just this"
    assert c.run(["cat"]).stdout == b""
    c.close()


# -- resource types work unchanged ----------------------------------------------------------

@pytest.fixture(params=["root", "become"])
def any_conn(request: pytest.FixtureRequest, fleet: Fleet) -> Iterator[tuple[SSHConnector,
                                                                             str, str]]:
    if request.param == "root":
        c, name = connector(fleet.hosts[0]), "host1"
    else:
        host = request.getfixturevalue("sudo_host")
        c, name = connector(host, user=DEPLOY, become=True, become_password=PASSWORD), "host2"
    path = f"/srv/tectum-ssh/{secrets.token_hex(4)}"
    if not c.exists("/srv/tectum-ssh"):
        c.make_dir("/srv/tectum-ssh", mode=None, owner=None, group=None)
    c.make_dir(path, mode=None, owner=None, group=None)
    c.log.clear()
    yield c, name, path
    c.remove(path, recursive=True)
    c.close()


def test_account_changes_are_one_round_trip_each(any_conn: tuple[SSHConnector, str, str],
                                                 fleet: Fleet) -> None:
    """groupadd, then useradd (no group given: the host's group of the same name becomes the
    primary group, decided on the host), then userdel and groupdel: each change reads the
    accounts back in its own round trip."""
    conn, host, _ = any_conn
    name = f"tectumssh_{secrets.token_hex(3)}"
    try:
        conn.connect()
        start = conn.round_trips
        action, group = converge(GroupType(), conn, {"name": name})
        assert action is Action.CREATE and conn.round_trips == start + 2  # read, groupadd
        assert group is not None and group["ensure"] == "present"
        start = conn.round_trips
        action, user = converge(UserType(), conn, {"name": name, "shell": "/bin/sh"})
        assert action is Action.CREATE and conn.round_trips == start + 2  # read, useradd
        assert user is not None and (user["group"], user["shell"]) == (name, "/bin/sh")
        assert fleet.run(host, f"id -gn {name}", check=True).stdout.strip() == name
        assert user["uid"] == int(fleet.run(host, f"id -u {name}", check=True).stdout)
        start = conn.round_trips
        delete(UserType(), conn, user)
        delete(GroupType(), conn, group)
        assert conn.round_trips == start + 2
        assert fleet.run(host, f"getent passwd {name} || getent group {name}").returncode == 2
    finally:
        fleet.run(host, f"userdel -r {name}; groupdel {name}")


@pytest.mark.parametrize("where", ["ssh", "local"])
def test_numeric_owner_and_group_settle(any_conn: tuple[SSHConnector, str, str],
                                        tmp_path: Path, where: str) -> None:
    """owner="1"/group="0" (ids, as chown reads digits) plan no change once they hold, although
    the host reads back names (daemon, root)."""
    ssh, _, root = any_conn
    conn: Connector = ssh if where == "ssh" else LocalConnector()
    base = root if where == "ssh" else str(tmp_path)
    for rt, attrs in ((DirectoryType(), {"path": f"{base}/d", "owner": "1", "group": "0"}),
                      (FileType(), {"path": f"{base}/f", "content": "x\n", "owner": "1",
                                    "group": "0"})):
        action, state = converge(rt, conn, attrs)
        assert action is Action.CREATE
        fact = conn.stat_paths([attrs["path"]])[0]
        assert fact is not None and (fact.owner, fact.group, fact.uid, fact.gid) == \
            ("daemon", "root", 1, 0)
        assert converge(rt, conn, attrs, state)[0] is Action.NOOP
        # and a name still compares as a name
        named = {**attrs, "owner": "daemon", "group": "root"}
        assert converge(rt, conn, named, state)[0] is Action.NOOP


def test_file_directory_symlink_types(fleet: Fleet, any_conn: tuple[SSHConnector, str, str]
                                      ) -> None:
    conn, name, root = any_conn
    ft, dt, st = FileType(), DirectoryType(), SymlinkType()
    d_attrs = {"path": f"{root}/www", "mode": "0750", "owner": "daemon"}
    f_attrs = {"path": f"{root}/www/index.html", "content": "<h1>hi</h1>\n", "mode": "0640"}
    s_attrs = {"path": f"{root}/current", "target": "www"}

    action, d_state = converge(dt, conn, d_attrs)
    assert action is Action.CREATE
    action, f_state = converge(ft, conn, f_attrs)
    assert action is Action.CREATE
    action, s_state = converge(st, conn, s_attrs)
    assert action is Action.CREATE
    assert (upper(fleet, name, root) / "www" / "index.html").read_bytes() == b"<h1>hi</h1>\n"

    # no-op: one read (one round trip) per resource and no mutation
    conn.log.clear()
    rounds = conn.round_trips
    assert converge(dt, conn, d_attrs, d_state)[0] is Action.NOOP
    assert converge(ft, conn, f_attrs, f_state)[0] is Action.NOOP
    assert converge(st, conn, s_attrs, s_state)[0] is Action.NOOP
    assert conn.round_trips == rounds + 3
    assert mutations(conn) == []

    # update: content, then mode only (no rewrite), then the link target and the dir owner
    action, f_state = converge(ft, conn, {**f_attrs, "content": "<h1>v2</h1>\n"}, f_state)
    assert action is Action.UPDATE and mutations(conn)[-1]["op"] == "write"
    action, f_state = converge(ft, conn, {**f_attrs, "content": "<h1>v2</h1>\n",
                                          "mode": "0644"}, f_state)
    assert action is Action.UPDATE and mutations(conn)[-1]["op"] == "set_attrs"
    action, s_state = converge(st, conn, {**s_attrs, "target": "www/index.html"}, s_state)
    assert action is Action.UPDATE
    action, d_state = converge(dt, conn, {**d_attrs, "owner": "root"}, d_state)
    assert action is Action.UPDATE
    facts = conn.stat_paths([f_attrs["path"], s_attrs["path"], d_attrs["path"]], content=True)
    assert facts[0] is not None and (facts[0].content, facts[0].mode) == \
        (b"<h1>v2</h1>\n", "0644")
    assert facts[1] is not None and facts[1].target == "www/index.html"
    assert facts[2] is not None and (facts[2].owner, facts[2].mode) == ("root", "0750")

    # drift is seen and repaired
    fleet.run(name, f"echo tampered > {f_attrs['path']}", check=True)
    change = plan_one(ft, conn, {**f_attrs, "content": "<h1>v2</h1>\n", "mode": "0644"},
                      f_state)
    assert change.action is Action.UPDATE
    assert [c.name for c in change.changes] == ["content"]
    assert change.changes[0].before == "tampered\n"

    # delete
    assert s_state is not None and f_state is not None and d_state is not None
    delete(st, conn, s_state)
    delete(ft, conn, f_state)
    delete(dt, conn, d_state)
    assert conn.stat_paths([s_attrs["path"], f_attrs["path"], d_attrs["path"]]) == \
        [None, None, None]


def test_command_type(any_conn: tuple[SSHConnector, str, str]) -> None:
    conn, _, root = any_conn
    ct = CommandType()
    attrs = {"command": f"echo ran >> {root}/runs; touch {root}/done",
             "creates": f"{root}/done", "cwd": root, "environment": {"X": "1"}}
    action, state = converge(ct, conn, attrs)
    assert action is Action.CREATE and state is not None and state["exit_code"] == 0
    conn.log.clear()
    assert converge(ct, conn, attrs, state)[0] is Action.NOOP
    assert mutations(conn) == []
    # unguarded list command: runs once, again when its arguments change (replace)
    argv = {"command": ["sh", "-c", 'printf "%s\\n" "$0" >> runs', "a;b"], "cwd": root}
    action, state2 = converge(ct, conn, argv)
    assert action is Action.CREATE
    assert converge(ct, conn, argv, state2)[0] is Action.NOOP
    argv2 = {**argv, "command": ["sh", "-c", 'printf "%s\\n" "$0" >> runs', "$(c)"]}
    assert converge(ct, conn, argv2, state2)[0] is Action.REPLACE
    assert conn.run(["cat", f"{root}/runs"]).stdout == b"ran\na;b\n$(c)\n"
    # unless runs read-only
    guarded = {"command": ["false"], "unless": ["test", "-d", root]}
    conn.log.clear()
    assert converge(ct, conn, guarded)[0] is Action.NOOP
    assert _plain(conn.log) == [{"op": "run", "mutating": False, "argv": ["test", "-d", root]}]
    assert state is not None
    delete(ct, conn, state)


# -- injection -------------------------------------------------------------------------------

HOSTILE = [
    "; touch tectum-pwned-1",
    "&& touch tectum-pwned-2",
    "| touch tectum-pwned-3",
    "$(touch tectum-pwned-4)",
    "`touch tectum-pwned-5`",
    "'; touch tectum-pwned-6; '",
    '"; touch tectum-pwned-7; "',
    "\ntouch tectum-pwned-8\n",
    "$HOME${IFS}touch${IFS}tectum-pwned-9",
    "> tectum-pwned-10",
    "\\$(touch tectum-pwned-11)\\",
    "#!; touch tectum-pwned-12",
    "$(printf 'touch tectum-pwned-13' | sh)",
    "-rf",
    "--help",
    "-",
    "*",
    "?[a-z]*",
    "~root",
    "~",
    "a\tb\rc\x1b[31m",
    "%s%n%x",
    "${PATH}",
    "' \" ` $ \\ ! ; & | < > ( ) { }",
    "ünï € \udcff",
]


def test_hostile_strings_arrive_byte_exact_and_run_nothing(fleet: Fleet, conn: SSHConnector,
                                                           base: str) -> None:
    local_root = upper(fleet, "host1", base)
    for i, s in enumerate(HOSTILE):
        raw = s.encode("utf-8", "surrogateescape")
        path = f"{base}/{s}"
        conn.write_file(path, raw, mode=None, owner=None, group=None)
        fact = conn.stat_paths([path, s], content=True)
        assert fact[0] is not None and fact[0].content == raw, s
        assert (local_root / s).read_bytes() == raw
        assert conn.run(["printf", "%s", s]).stdout == raw, s
        assert conn.run(["sh", "-c", 'printf %s "$V"'], env={"V": s}).stdout == raw, s
        conn.make_symlink(f"{base}/link{i}", s)
        assert conn.stat_paths([f"{base}/link{i}"])[0] == PathFact(
            "symlink", "0777", "root", "root", len(raw), target=s, uid=0, gid=0), s
        d = f"{base}/dir{i}{s}"
        conn.make_dir(d, mode=None, owner=None, group=None)
        assert conn.run(["pwd", "-P"], cwd=d).stdout == d.encode("utf-8", "surrogateescape") \
            + b"\n"
        conn.set_attrs(path, mode="0600", owner="daemon", group=None)
        assert conn.exists(path)
        conn.remove(path)
        assert not conn.exists(path)
    names = set(os.listdir(os.fsencode(local_root)))
    assert {f"link{i}".encode() for i in range(len(HOSTILE))} <= names
    found = fleet.run("host1", "find / \\( -path /proc -o -path /sys \\) -prune -o "
                      "-name 'tectum-pwned-*' -print", check=True).stdout
    assert found == ""


def test_argument_with_nul_is_refused(conn: SSHConnector) -> None:
    with pytest.raises(ValueError):
        conn.run(["printf", "a\x00b"])
    with pytest.raises(ValueError):
        conn.stat_paths(["/etc\x00passwd"])
    assert conn.log == []


def test_mode_parsing_matches_local(conn: SSHConnector, base: str) -> None:
    for given, want in [("644", "0644"), ("0o600", "0600"), ("2755", "2755")]:
        conn.write_file(f"{base}/m", b"", mode=given, owner=None, group=None)
        fact = conn.stat_paths([f"{base}/m"])[0]
        assert fact is not None and fact.mode == want
    with pytest.raises(ValueError):
        conn.write_file(f"{base}/m", b"", mode="rw-", owner=None, group=None)


# -- many writes in one round trip ------------------------------------------------------------

def test_write_files_is_one_round_trip_atomic_and_exact(fleet: Fleet, conn: SSHConnector,
                                                        base: str) -> None:
    conn.write_file(f"{base}/kept", b"old", mode="0640", owner="daemon", group="daemon")
    names = ["plain", "with space", "new\nline", "ünï \udcff", "-dash", "*"]
    items: list[tuple[str, bytes, str | None, str | None, str | None]] = [
        (f"{base}/{n}", f"data {i}\n".encode() * (i + 1), "0600" if i % 2 else None, None, None)
        for i, n in enumerate(names)]
    items.append((f"{base}/kept", b"new content", None, None, None))  # keeps mode and owner
    items.append((f"{base}/owned", b"x", "4755", "daemon", "root"))
    before = conn.round_trips
    got = conn.write_files(items)
    assert conn.round_trips - before == 1
    root = upper(fleet, "host1", base)
    for (path, data, _mode, _, _), fact in zip(items, got, strict=True):
        assert isinstance(fact, PathFact), fact
        assert (root / path.rsplit("/", 1)[1]).read_bytes() == data
        assert fact.sha256 == hashlib.sha256(data).hexdigest()
        assert fact == conn.stat_paths([path])[0]._replace(sha256=fact.sha256)  # type: ignore
    by_path = dict(zip([i[0] for i in items], got, strict=True))
    assert by_path[f"{base}/plain"].mode == "0644"  # type: ignore[union-attr]
    assert by_path[f"{base}/with space"].mode == "0600"  # type: ignore[union-attr]
    kept = by_path[f"{base}/kept"]
    assert isinstance(kept, PathFact) and (kept.mode, kept.owner, kept.group) == \
        ("0640", "daemon", "daemon")
    owned = by_path[f"{base}/owned"]
    assert isinstance(owned, PathFact) and (owned.mode, owned.owner, owned.group) == \
        ("4755", "daemon", "root")
    leftovers = [n for n in os.listdir(root) if ".tectum-" in n]
    assert leftovers == []
    assert [e["op"] for e in mutations(conn)][-len(items):] == ["write"] * len(items)


def test_write_files_splits_a_long_command_line(fleet: Fleet, conn: SSHConnector, base: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ssh_module, "_ARGS_BUDGET", 1000)
    items: list[tuple[str, bytes, str | None, str | None, str | None]] = [
        (f"{base}/d{i % 3}-" + "x" * 40 + f"-{i}", f"{i}\n".encode(), "0640", None, None)
        for i in range(30)]
    conn.connect()
    before = conn.round_trips
    got = conn.write_files(items)
    assert conn.round_trips - before > 1  # each call's arguments stay within the budget
    for (path, data, _, _, _), fact in zip(items, got, strict=True):
        assert isinstance(fact, PathFact) and fact.mode == "0640", fact
        assert fact.sha256 == hashlib.sha256(data).hexdigest()
        assert (upper(fleet, "host1", base) / path.rsplit("/", 1)[1]).read_bytes() == data
    assert [n for n in os.listdir(upper(fleet, "host1", base)) if ".tectum-" in n] == []


def test_write_files_replaces_links_not_what_they_point_to(fleet: Fleet, conn: SSHConnector,
                                                          base: str) -> None:
    conn.make_dir(f"{base}/real", mode=None, owner=None, group=None)
    conn.write_file(f"{base}/target", b"keep\n", mode=None, owner=None, group=None)
    conn.make_symlink(f"{base}/to-dir", f"{base}/real")
    conn.make_symlink(f"{base}/to-file", f"{base}/target")
    got = conn.write_files([(f"{base}/to-dir", b"a", None, None, None),
                            (f"{base}/to-file", b"b", None, None, None)])
    assert all(isinstance(f, PathFact) and f.kind == "file" and f.mode == "0644" for f in got)
    root = upper(fleet, "host1", base)
    assert (root / "to-dir").read_bytes() == b"a" and (root / "to-file").read_bytes() == b"b"
    assert (root / "real").is_dir() and (root / "target").read_bytes() == b"keep\n"


def test_make_dir_and_make_dirs_make_missing_parents(fleet: Fleet, conn: SSHConnector,
                                                    base: str) -> None:
    odd = "new\nline dir"
    conn.make_dir(f"{base}/{odd}/x/y", mode="0700", owner="daemon", group=None)
    got = conn.make_dirs([(f"{base}/p/q/r", "0750", None, None),
                          (f"{base}/p", "0711", None, None)])  # declared: made first, its mode
    root = upper(fleet, "host1", base)
    modes = {rel: format(os.stat(root / rel).st_mode & 0o7777, "04o")
             for rel in (odd, f"{odd}/x", f"{odd}/x/y", "p", "p/q", "p/q/r")}
    assert modes == {odd: "0755", f"{odd}/x": "0755", f"{odd}/x/y": "0700",
                     "p": "0711", "p/q": "0755", "p/q/r": "0750"}
    assert [f.mode for f in got] == ["0750", "0711"]  # type: ignore[union-attr]
    owners = fleet.run("host1", f"stat -c %U '{base}/p/q' '{base}/{odd}/x/y'", check=True)
    assert owners.stdout.split() == ["root", "daemon"]


def test_make_dirs_is_one_round_trip_and_reports_each_failure(fleet: Fleet, conn: SSHConnector,
                                                              base: str) -> None:
    conn.write_file(f"{base}/file", b"x", mode=None, owner=None, group=None)
    odd = "with space\nand 'quote' *"
    items: list[tuple[str, str | None, str | None, str | None]] = [
        (f"{base}/a/b", "0700", None, None),  # inside a: made after it (parents first)
        (f"{base}/a", None, None, None),
        (f"{base}/{odd}", "2750", "daemon", "daemon"),
        (f"{base}/-dash", "0755", "0", "0"),
        (f"{base}/file", None, None, None),  # something is there
        (f"{base}/file/x", None, None, None),  # its parent is a file
        (f"{base}/nouser", None, "no-such-user-x", None),
        (f"{base}/nogroup", None, None, "no-such-group-x"),
    ]
    conn.connect()
    before = conn.round_trips
    got = conn.make_dirs(items)
    assert conn.round_trips - before == 1
    facts = {path: fact for (path, *_), fact in zip(items, got, strict=True)}
    for path, _mode, _o, _g in items[:4]:
        assert facts[path] == conn.stat_paths([path])[0], path
    assert [(f.mode, f.owner, f.group) for f in got[:4]] == [  # type: ignore[union-attr]
        ("0700", "root", "root"), ("0755", "root", "root"), ("2750", "daemon", "daemon"),
        ("0755", "root", "root")]
    messages = [str(e) for e in got[4:]]
    assert "something is there" in messages[0]
    assert "cannot create its parent directories (one of them is there and is not a " \
        "directory)" in messages[1]
    assert "user 'no-such-user-x'" in messages[2] and "group 'no-such-group-x'" in messages[3]
    assert not conn.exists(f"{base}/nouser") and not conn.exists(f"{base}/nogroup")
    assert [e["path"] for e in mutations(conn)][-len(items):] == \
        sorted((i[0] for i in items), key=lambda p: p.count("/"))


def test_write_files_reports_each_failure_and_writes_the_rest(conn: SSHConnector,
                                                              base: str) -> None:
    got = conn.write_files([
        (f"{base}/a", b"a", None, None, None),
        (f"{base}/b", b"b", None, "no-such-user-x", None),
        (f"{base}/c", b"c", None, None, "no-such-group-x"),
    ])
    assert isinstance(got[0], PathFact)
    assert isinstance(got[1], ConnectorError) and "user 'no-such-user-x'" in str(got[1])
    assert isinstance(got[2], ConnectorError) and "group 'no-such-group-x'" in str(got[2])
    assert not conn.exists(f"{base}/b") and not conn.exists(f"{base}/c")
    # a missing directory or a directory in the way: each item as write_file reports it
    conn.make_dir(f"{base}/dir", mode=None, owner=None, group=None)
    got = conn.write_files([
        (f"{base}/ok", b"ok", None, None, None),
        (f"{base}/missing/x", b"x", None, None, None),
        (f"{base}/dir", b"x", None, None, None),
    ])
    assert isinstance(got[0], PathFact)
    assert isinstance(got[1], ConnectorError) and "does not exist" in str(got[1])
    assert isinstance(got[2], ConnectorError) and "Is a directory" in str(got[2])
    assert conn.run(["cat", f"{base}/ok"]).stdout == b"ok"
