"""``download`` and ``archive`` for real on the local host: a real HTTP server on 127.0.0.1
(stdlib ``http.server`` in a thread), real curl/wget/tar/unzip, real archives made in
``tmp_path`` — including malicious ones. Everything lives in ``tmp_path``."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import threading
import zipfile
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tectum.plans.plan import Action, ResourceChange
from tectum.providers.base import ApplyError, ReadItem
from tectum.providers.host.connector import LocalConnector
from tectum.providers.host.download import (
    ArchiveType,
    DownloadType,
    Entry,
    parse_tar_listing,
    unsafe_entry,
)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another group needs root")


# -- a real HTTP server ----------------------------------------------------------------------

class Server:
    """Files under ``root`` served on ``address`` (127.0.0.1; a fleet host reaches the bridge
    address); ``requests`` lists (path, headers) seen."""

    def __init__(self, root: Path, address: str = "127.0.0.1") -> None:
        self.root = root
        self.requests: list[tuple[str, dict[str, str]]] = []
        server = self

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                server.requests.append((self.path, dict(self.headers.items())))
                super().do_GET()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.httpd = ThreadingHTTPServer((address, 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}/{name}"

    def publish(self, name: str, data: bytes) -> str:
        """Serve ``data`` as ``name``; returns its ``sha256:`` checksum."""
        (self.root / name).write_bytes(data)
        return "sha256:" + hashlib.sha256(data).hexdigest()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "www"
    root.mkdir()
    srv = Server(root)
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture
def conn() -> LocalConnector:
    return LocalConnector(log_path="")


def mutations(conn: LocalConnector) -> list[dict[str, object]]:
    return [e for e in conn.log if e["mutating"]]


def plan(rt: Any, conn: LocalConnector, attrs: dict[str, Any],
         prior: dict[str, Any] | None = None, *, prepared: bool = False
         ) -> ResourceChange:
    """Read and plan one object as the engine does (``attrs`` as declared)."""
    desired = attrs if prepared else rt.prepare(attrs, "/tmp")
    assert not rt.check(desired), rt.check(desired)
    observed = rt.read(conn, [ReadItem(desired, prior)])[0]
    action, changes = rt.plan(desired, observed, prior)
    return ResourceChange(address=f"{rt.name}.x", type=rt.name, action=action,
                          before=rt.stored(observed) if observed is not None else None,
                          after=desired, changes=changes, prior=prior)


def converge(rt: Any, conn: LocalConnector, attrs: dict[str, Any],
             prior: dict[str, Any] | None = None) -> tuple[ResourceChange, dict[str, Any] | None]:
    change = plan(rt, conn, attrs, prior)
    if change.action is Action.NOOP:
        return change, prior
    return change, rt.apply(conn, change)


def delete(rt: Any, conn: LocalConnector, record: dict[str, Any]) -> None:
    observed = rt.read(conn, [ReadItem(None, record)])[0]
    change = ResourceChange(address=f"{rt.name}.x", type=rt.name, action=Action.DELETE,
                            before=rt.stored(observed) if observed else None, after=None,
                            prior=record)
    assert rt.apply(conn, change) is None


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".tectum-" in p.name)


# -- download ------------------------------------------------------------------------------

@pytest.fixture
def dl() -> DownloadType:
    return DownloadType()


def test_download_verifies_and_is_idempotent(dl: DownloadType, conn: LocalConnector,
                                             server: Server, tmp_path: Path) -> None:
    data = b"release 1\n" * 1000
    checksum = server.publish("tool", data)
    path = tmp_path / "tool"
    attrs = {"path": str(path), "url": server.url("tool"), "checksum": checksum,
             "mode": "0750"}

    change, record = converge(dl, conn, attrs)
    assert change.action is Action.CREATE
    assert path.read_bytes() == data
    assert format(path.stat().st_mode & 0o7777, "04o") == "0750"
    assert record is not None
    assert record["sha256"] == hashlib.sha256(data).hexdigest()
    assert record["checksum"] == checksum and record["owner"] == "root"
    assert len(server.requests) == 1
    assert leftovers(tmp_path) == []

    fresh = LocalConnector(log_path="")
    again = plan(dl, fresh, attrs, record)
    assert (again.action, again.changes) == (Action.NOOP, [])
    assert mutations(fresh) == []
    assert len(server.requests) == 1  # no network on a no-op


def test_sha512_checksum(dl: DownloadType, conn: LocalConnector, server: Server,
                         tmp_path: Path) -> None:
    data = b"sha512 content\n"
    server.publish("f", data)
    checksum = "sha512:" + hashlib.sha512(data).hexdigest().upper()
    attrs = {"path": str(tmp_path / "f"), "url": server.url("f"), "checksum": checksum}
    change, record = converge(dl, conn, attrs)
    assert change.action is Action.CREATE and record is not None
    assert record["checksum"] == checksum.lower()
    assert plan(dl, conn, attrs, record).action is Action.NOOP


def test_checksum_mismatch_keeps_the_old_file(dl: DownloadType, conn: LocalConnector,
                                              server: Server, tmp_path: Path) -> None:
    path = tmp_path / "tool"
    path.write_bytes(b"old content\n")
    os.chmod(path, 0o600)
    served = server.publish("tool", b"what the server sends\n")
    wrong = "sha256:" + hashlib.sha256(b"what we expect\n").hexdigest()
    change = plan(dl, conn, {"path": str(path), "url": server.url("tool"), "checksum": wrong})
    assert change.action is Action.UPDATE
    with pytest.raises(ApplyError) as err:
        dl.apply(conn, change)
    text = str(err.value)
    assert "checksum mismatch" in text and wrong in text and served in text
    assert path.read_bytes() == b"old content\n"
    assert path.stat().st_mode & 0o777 == 0o600
    assert leftovers(tmp_path) == []


def test_404_fails_and_creates_nothing(dl: DownloadType, conn: LocalConnector,
                                       server: Server, tmp_path: Path) -> None:
    path = tmp_path / "missing"
    change = plan(dl, conn, {"path": str(path), "url": server.url("nothing-here"),
                             "checksum": "sha256:" + "0" * 64})
    with pytest.raises(ApplyError) as err:
        dl.apply(conn, change)
    assert "404" in str(err.value) and server.url("nothing-here") in str(err.value)
    assert not path.exists()
    assert leftovers(tmp_path) == []


def test_missing_directory_is_reported(dl: DownloadType, conn: LocalConnector,
                                       server: Server, tmp_path: Path) -> None:
    checksum = server.publish("x", b"x")
    change = plan(dl, conn, {"path": str(tmp_path / "nope" / "x"), "url": server.url("x"),
                             "checksum": checksum})
    with pytest.raises(ApplyError, match="does not exist.*Directory"):
        dl.apply(conn, change)


def test_content_drift_is_repaired(dl: DownloadType, conn: LocalConnector, server: Server,
                                   tmp_path: Path) -> None:
    data = b"good\n"
    checksum = server.publish("f", data)
    path = tmp_path / "f"
    attrs = {"path": str(path), "url": server.url("f"), "checksum": checksum}
    _, record = converge(dl, conn, attrs)
    assert record is not None
    path.write_bytes(b"edited by hand\n")

    change = plan(dl, conn, attrs, record)
    assert change.action is Action.UPDATE
    assert [c.name for c in change.changes] == ["checksum"]
    assert change.changes[0].before == "sha256:" + hashlib.sha256(b"edited by hand\n").hexdigest()
    new = dl.apply(conn, change)
    assert path.read_bytes() == data and new == record
    assert len(server.requests) == 2


def test_mode_drift_changes_mode_only(dl: DownloadType, conn: LocalConnector, server: Server,
                                      tmp_path: Path) -> None:
    checksum = server.publish("f", b"data\n")
    path = tmp_path / "f"
    attrs = {"path": str(path), "url": server.url("f"), "checksum": checksum, "mode": "0640"}
    _, record = converge(dl, conn, attrs)
    os.chmod(path, 0o666)
    fresh = LocalConnector(log_path="")
    change = plan(dl, fresh, attrs, record)
    assert [(c.name, c.before, c.after) for c in change.changes] == [("mode", "0666", "0640")]
    assert dl.apply(fresh, change) == record
    assert [e["op"] for e in mutations(fresh)] == ["set_attrs"]
    assert len(server.requests) == 1


def test_url_change_with_checksum_downloads_nothing(dl: DownloadType, conn: LocalConnector,
                                                    server: Server, tmp_path: Path) -> None:
    checksum = server.publish("v1", b"same\n")
    server.publish("mirror", b"same\n")
    path = tmp_path / "f"
    attrs = {"path": str(path), "url": server.url("v1"), "checksum": checksum}
    _, record = converge(dl, conn, attrs)
    moved = {**attrs, "url": server.url("mirror")}
    change = plan(dl, conn, moved, record)
    assert change.action is Action.UPDATE
    assert [(c.name, c.after) for c in change.changes] == [("url", server.url("mirror"))]
    new = dl.apply(conn, change)
    assert new is not None and new["url"] == server.url("mirror")
    assert len(server.requests) == 1
    assert plan(dl, conn, moved, new).action is Action.NOOP


def test_found_file_that_matches_is_adopted(dl: DownloadType, conn: LocalConnector,
                                            server: Server, tmp_path: Path) -> None:
    data = b"already here\n"
    checksum = server.publish("f", data)
    path = tmp_path / "f"
    path.write_bytes(data)
    attrs = {"path": str(path), "url": server.url("f"), "checksum": checksum}
    change = plan(dl, conn, attrs)
    assert change.action is Action.NOOP
    assert not dl.takes_over_as_created(change.before, dl.prepare(attrs, "/"))
    assert server.requests == []


def test_without_checksum(dl: DownloadType, conn: LocalConnector, server: Server,
                          tmp_path: Path) -> None:
    server.publish("f", b"first\n")
    path = tmp_path / "f"
    attrs = {"path": str(path), "url": server.url("f"), "insecure_skip_checksum": True}
    change, record = converge(dl, conn, attrs)
    assert change.action is Action.CREATE and record is not None
    assert dl.warnings(change)
    assert "checksum" not in record
    assert record["sha256"] == hashlib.sha256(b"first\n").hexdigest()

    server.publish("f", b"second\n")  # the server changes: nothing verifies, nothing fetched
    assert plan(dl, conn, attrs, record).action is Action.NOOP

    path.write_bytes(b"by hand\n")  # changed since tectum downloaded it: fetched again
    change = plan(dl, conn, attrs, record)
    assert [c.name for c in change.changes] == ["sha256"]
    assert dl.label("sha256") == "content"
    new = dl.apply(conn, change)
    assert path.read_bytes() == b"second\n"
    assert new is not None and new["sha256"] == hashlib.sha256(b"second\n").hexdigest()
    assert len(server.requests) == 2


def test_headers_are_sent_but_never_on_a_command_line(dl: DownloadType, conn: LocalConnector,
                                                      server: Server, tmp_path: Path) -> None:
    checksum = server.publish("private", b"secret file\n")
    token = "Bearer t0ken-" + os.urandom(4).hex()
    attrs = {"path": str(tmp_path / "p"), "url": server.url("private"), "checksum": checksum,
             "headers": {"Authorization": token, "X-Trace": "one"}}
    _, record = converge(dl, conn, attrs)
    seen = server.requests[-1][1]
    assert seen["Authorization"] == token and seen["X-Trace"] == "one"
    assert all(token not in str(e.get("argv")) for e in conn.log)
    assert record is not None and "headers" not in record  # never in state
    assert dl.schema.attrs["headers"].sensitive
    # a new token alone changes nothing on the host: nothing to plan
    change = plan(dl, conn, {**attrs, "headers": {"Authorization": "Bearer new"}}, record)
    assert (change.action, change.changes) == (Action.NOOP, [])


def _bin_without(tmp_path: Path, *missing: str) -> str:
    """A PATH directory with links to the tools the download script uses, minus
    ``missing``."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("sh", "dirname", "basename", "rm", "mktemp", "sed", "curl", "wget",
                 "sha256sum", "sha512sum", "chown", "chgrp", "chmod", "mv"):
        found = shutil.which(tool)
        if tool not in missing and found is not None:
            os.symlink(found, bindir / tool)
    return str(bindir)


def test_wget_when_curl_is_missing(dl: DownloadType, conn: LocalConnector, server: Server,
                                   tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("wget") is None:
        pytest.skip("wget is not installed")
    checksum = server.publish("w", b"via wget\n")
    monkeypatch.setenv("PATH", _bin_without(tmp_path, "curl"))
    attrs = {"path": str(tmp_path / "w"), "url": server.url("w"), "checksum": checksum,
             "headers": {"X-Client": "wget-test"}}
    _, record = converge(dl, conn, attrs)
    assert (tmp_path / "w").read_bytes() == b"via wget\n" and record is not None
    assert "Wget" in server.requests[-1][1]["User-Agent"]
    assert server.requests[-1][1]["X-Client"] == "wget-test"

    change = plan(dl, conn, {**attrs, "url": server.url("gone"),
                             "checksum": "sha256:" + "1" * 64}, record)
    with pytest.raises(ApplyError, match="404"):
        dl.apply(conn, change)


def test_neither_curl_nor_wget(dl: DownloadType, conn: LocalConnector, server: Server,
                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checksum = server.publish("n", b"n\n")
    monkeypatch.setenv("PATH", _bin_without(tmp_path, "curl", "wget"))
    change = plan(dl, conn, {"path": str(tmp_path / "n"), "url": server.url("n"),
                             "checksum": checksum})
    with pytest.raises(ApplyError, match="neither curl nor wget"):
        dl.apply(conn, change)
    assert not (tmp_path / "n").exists()


def test_check_and_validation(dl: DownloadType) -> None:
    base = {"path": "/tmp/x", "url": "https://example.org/x"}
    problems = dl.check(base)
    assert len(problems) == 1 and "checksum is not set" in problems[0]
    assert "insecure_skip_checksum=True" in problems[0]
    assert dl.check({**base, "insecure_skip_checksum": True}) == []
    assert dl.check({**base, "checksum": "sha256:" + "a" * 64}) == []
    assert "not both" in dl.check({**base, "checksum": "sha256:" + "a" * 64,
                                   "insecure_skip_checksum": True})[0]
    attrs = dl.schema.attrs
    assert attrs["checksum"].check("md5:abc") is not None
    assert "64 hex digits" in str(attrs["checksum"].check("sha256:abc"))
    assert attrs["checksum"].check("sha512:" + "b" * 128) is None
    assert "credentials" in str(attrs["url"].check("https://u:p@example.org/x"))
    assert attrs["url"].check("file:///etc/passwd") is not None
    assert attrs["url"].check("https://example.org/a b") is not None
    assert attrs["headers"].check({"Bad Name": "x"}) is not None
    assert attrs["headers"].check({"X-A": "line\nbreak"}) is not None
    assert attrs["timeout"].check(0) is not None


def test_a_killed_download_leaves_no_temporary_file(server: Server, tmp_path: Path) -> None:
    """``tectum apply`` killed (SIGKILL to its process group, as ``kill -9`` of a run and its
    curl) while the body comes in: its ``.NAME.tectum-PID-download`` stays, and the next
    apply sweeps it (the journal's pending intent names the path)."""
    import signal
    import subprocess
    import sys
    import time

    from tectum.process import pid_alive
    from tests.conftest import run_tectum, tectum_env

    release = threading.Event()

    class Stalling(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"x" * 1000)
            self.wfile.flush()
            release.wait(60)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    slow = ThreadingHTTPServer(("127.0.0.1", 0), Stalling)
    thread = threading.Thread(target=slow.serve_forever, daemon=True)
    thread.start()
    data = b"the real content\n"
    checksum = server.publish("f.bin", data)
    out, root = tmp_path / "out", tmp_path / "proj"
    out.mkdir()
    root.mkdir()

    def stack(url: str) -> None:
        (root / "stack.py").write_text(
            "from tectum.host import Download\n"
            f"Download('f', url={url!r}, path={str(out / 'f.bin')!r}, "
            f"checksum={checksum!r})\n")

    host, port = slow.server_address[:2]
    stack(f"http://{host!s}:{port}/f.bin")
    proc = subprocess.Popen([sys.executable, "-m", "tectum", "apply", "--auto-approve",
                             str(root)], env=tectum_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not leftovers(out) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert leftovers(out), "the download never started"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        release.set()
        slow.shutdown()
        slow.server_close()
        thread.join(5)
    assert leftovers(out) and not (out / "f.bin").exists()
    # the killed shell is swept once it is gone (an orphan is reaped by init, here maybe late)
    pid = int(leftovers(out)[0].rpartition(".tectum-")[2].split("-")[0])
    deadline = time.monotonic() + 120
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    stack(server.url("f.bin"))
    result = run_tectum("apply", "--auto-approve", str(root))
    assert result.returncode == 0, result.output
    assert (out / "f.bin").read_bytes() == data
    assert leftovers(out) == [], "the next apply sweeps what the killed download left"
    assert run_tectum("destroy", "--auto-approve", str(root)).returncode == 0
    assert list(out.iterdir()) == []


def test_delete_removes_the_file(dl: DownloadType, conn: LocalConnector, server: Server,
                                 tmp_path: Path) -> None:
    checksum = server.publish("d", b"d\n")
    path = tmp_path / "d"
    _, record = converge(dl, conn, {"path": str(path), "url": server.url("d"),
                                    "checksum": checksum})
    assert record is not None
    delete(dl, conn, record)
    assert not path.exists()


# -- archive -------------------------------------------------------------------------------

@pytest.fixture
def ar() -> ArchiveType:
    return ArchiveType()


TREE = {"app/bin/run": b"#!/bin/sh\necho run\n", "app/README": b"readme\n",
        "app/lib/x.txt": b"x\n"}


def make_tar(path: Path, files: dict[str, bytes], mode: str = "w:gz",
             extra: Callable[[tarfile.TarFile], None] | None = None) -> Path:
    how: Any = mode  # (tarfile's stubs want a literal mode)
    with tarfile.open(path, how) as tar:
        dirs = sorted({str(Path(n).parent) for n in files} - {"."})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755 if name.endswith("run") else 0o644
            info.uid = info.gid = 4242  # someone else's ids: not kept (--no-same-owner)
            tar.addfile(info, io.BytesIO(data))
        if extra is not None:
            extra(tar)
    return path


def make_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("suffix,mode", [(".tar", "w"), (".tar.gz", "w:gz"), (".tgz", "w:gz"),
                                         (".tar.xz", "w:xz"), (".tar.bz2", "w:bz2")])
def test_tar_formats(ar: ArchiveType, conn: LocalConnector, tmp_path: Path, suffix: str,
                     mode: str) -> None:
    src = make_tar(tmp_path / f"app{suffix}", TREE, mode)
    dest = tmp_path / "dest"
    dest.mkdir()
    change, record = converge(ar, conn, {"src": str(src), "dest": str(dest)})
    assert change.action is Action.CREATE and record is not None
    assert tree(dest) == ["app", "app/README", "app/bin", "app/bin/run", "app/lib",
                          "app/lib/x.txt"]
    assert (dest / "app/bin/run").read_bytes() == TREE["app/bin/run"]
    assert os.access(dest / "app/bin/run", os.X_OK)
    assert (dest / "app/README").stat().st_uid == os.geteuid()  # not uid 4242
    assert record["files"] == ["app", "app/README", "app/bin", "app/bin/run", "app/lib",
                               "app/lib/x.txt"]
    assert record["archive_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    fresh = LocalConnector(log_path="")
    again = plan(ar, fresh, {"src": str(src), "dest": str(dest)}, record)
    assert (again.action, again.changes) == (Action.NOOP, [])
    assert mutations(fresh) == []


def test_zip(ar: ArchiveType, conn: LocalConnector, tmp_path: Path) -> None:
    if shutil.which("unzip") is None:
        pytest.skip("unzip is not installed")
    src = make_zip(tmp_path / "app.zip", TREE)
    dest = tmp_path / "dest"
    dest.mkdir()
    _, record = converge(ar, conn, {"src": str(src), "dest": str(dest)})
    assert record is not None and record["format"] == "zip"
    assert (dest / "app/lib/x.txt").read_bytes() == b"x\n"
    assert set(record["files"]) >= set(TREE)
    assert plan(ar, conn, {"src": str(src), "dest": str(dest)}, record).action is Action.NOOP
    delete(ar, conn, record)
    assert tree(dest) == []


def _symlink(name: str, target: str) -> Callable[[tarfile.TarFile], None]:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type = tarfile.SYMTYPE
        info.linkname = target
        tar.addfile(info)
    return add


def _hardlink(name: str, target: str) -> Callable[[tarfile.TarFile], None]:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type = tarfile.LNKTYPE
        info.linkname = target
        tar.addfile(info)
    return add


@pytest.mark.parametrize("label,files,extra,entry", [
    ("dotdot", {"ok.txt": b"ok", "../evil": b"evil"}, None, "../evil"),
    ("nested-dotdot", {"a/../../evil": b"evil"}, None, "a/../../evil"),
    ("absolute", {"ok.txt": b"ok", "/tmp/tectum-evil-abs": b"evil"}, None,
     "/tmp/tectum-evil-abs"),
    ("symlink-absolute", {"ok.txt": b"ok"}, _symlink("etc", "/etc"), "etc"),
    ("symlink-climbs", {"ok.txt": b"ok"}, _symlink("sub/up", "../../.."), "sub/up"),
    ("hardlink-out", {"ok.txt": b"ok"}, _hardlink("pw", "/etc/passwd"), "pw"),
    ("hardlink-dotdot", {"ok.txt": b"ok"}, _hardlink("pw", "../outside"), "pw"),
])
def test_malicious_tar_is_refused(ar: ArchiveType, conn: LocalConnector, tmp_path: Path,
                                  label: str, files: dict[str, bytes],
                                  extra: Callable[[tarfile.TarFile], None] | None,
                                  entry: str) -> None:
    src = tmp_path / f"{label}.tar.gz"
    with tarfile.open(src, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if extra is not None:
            extra(tar)
    dest = tmp_path / "dest"
    dest.mkdir()
    change = plan(ar, conn, {"src": str(src), "dest": str(dest)})
    with pytest.raises(ApplyError) as err:
        ar.apply(conn, change)
    assert f"the entry {entry!r}" in str(err.value)
    assert "nothing was extracted" in str(err.value)
    assert tree(dest) == []
    assert not (tmp_path / "evil").exists() and not Path("/tmp/tectum-evil-abs").exists()
    assert not any(e["op"] == "run" and e["mutating"] for e in conn.log)


@pytest.mark.parametrize("gone", [False, True])
def test_an_extraction_killed_before_it_was_recorded_is_its_own(tmp_path: Path,
                                                                gone: bool) -> None:
    """Killed (SIGKILL) right after tar ran, before the result was recorded: the next apply
    (its sweep, from the manifest the extraction wrote) knows the entries as its own, so a
    destroy removes them, and what was in dest before stays. ``gone``: the archive left the
    configuration before the next apply, whose sweep removes what the killed run made."""
    from tests.conftest import run_tectum
    from tests.providers.host.test_git import apply_killed_at

    src = make_tar(tmp_path / "app.tar.gz", TREE)
    dest, root = tmp_path / "dest", tmp_path / "proj"
    dest.mkdir()
    root.mkdir()
    (dest / "mine.txt").write_text("there before\n")
    (root / "stack.py").write_text(
        "from tectum.host import Archive\n"
        f"Archive('app', src={str(src)!r}, dest={str(dest)!r})\n")
    apply_killed_at("tectum-extract", root, after=True)
    if gone:  # (a change to apply, so the next apply runs: its sweep comes first)
        (root / "stack.py").write_text(
            "from tectum.host import File\n"
            f"File('other', path={str(tmp_path / 'other')!r}, content='x\\n')\n")
    assert len(tree(dest)) > 2, "tar ran before the kill"
    assert any(p.name.startswith(".tectum-extract-") for p in dest.iterdir())
    result = run_tectum("apply", "--auto-approve", str(root))
    assert result.returncode == 0, result.output
    if gone:
        assert tree(dest) == ["mine.txt"], "the sweep removes what the killed run extracted"
    else:
        assert (dest / "app" / "README").exists()
        assert not any(p.name.startswith(".tectum-extract-") for p in dest.iterdir())
        assert run_tectum("plan", "--detailed-exitcode", str(root)).returncode == 0
    result = run_tectum("destroy", "--auto-approve", str(root))
    assert result.returncode == 0, result.output
    assert tree(dest) == ["mine.txt"]


@pytest.mark.parametrize("name,entry,why", [
    ("dotdot.zip", "../evil", '".."'), ("abs.zip", "/tectum-evil", "absolute")])
def test_malicious_zip_is_refused(ar: ArchiveType, conn: LocalConnector, tmp_path: Path,
                                  name: str, entry: str, why: str) -> None:
    if shutil.which("unzip") is None:
        pytest.skip("unzip is not installed")
    src = make_zip(tmp_path / name, {"ok.txt": b"ok", entry: b"evil"})
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(ApplyError, match=why) as err:
        ar.apply(conn, plan(ar, conn, {"src": str(src), "dest": str(dest)}))
    assert repr(entry) in str(err.value)
    assert tree(dest) == [] and not (tmp_path / "evil").exists()


def test_zip_symlink_is_refused(ar: ArchiveType, conn: LocalConnector, tmp_path: Path) -> None:
    if shutil.which("unzip") is None:
        pytest.skip("unzip is not installed")
    src = tmp_path / "link.zip"
    with zipfile.ZipFile(src, "w") as z:
        info = zipfile.ZipInfo("lnk")
        info.create_system = 3
        info.external_attr = (0o120777 << 16)
        z.writestr(info, "/etc")
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(ApplyError, match="symlink"):
        ar.apply(conn, plan(ar, conn, {"src": str(src), "dest": str(dest)}))
    assert tree(dest) == []


def test_inside_symlinks_are_fine(ar: ArchiveType, conn: LocalConnector, tmp_path: Path
                                  ) -> None:
    src = make_tar(tmp_path / "ok.tar.gz", TREE,
                   extra=lambda tar: (_symlink("app/current", "bin")(tar),
                                      _hardlink("app/again", "app/README")(tar), None)[-1])
    dest = tmp_path / "dest"
    dest.mkdir()
    _, record = converge(ar, conn, {"src": str(src), "dest": str(dest)})
    assert os.readlink(dest / "app/current") == "bin"
    assert (dest / "app/again").read_bytes() == b"readme\n"
    assert record is not None and "app/current" in record["files"]


def test_symlink_in_dest_where_archive_has_a_directory(ar: ArchiveType,
                                                       conn: LocalConnector,
                                                       tmp_path: Path) -> None:
    src = make_tar(tmp_path / "app.tar.gz", TREE)
    dest, outside = tmp_path / "dest", tmp_path / "outside"
    dest.mkdir()
    outside.mkdir()
    os.symlink(outside, dest / "app")
    with pytest.raises(ApplyError, match="is a symlink where the archive has a directory"):
        ar.apply(conn, plan(ar, conn, {"src": str(src), "dest": str(dest)}))
    assert tree(outside) == [] and os.path.islink(dest / "app")


def test_unsafe_entry_rules() -> None:
    assert unsafe_entry(Entry("file", "./a/b"), "tar") is None
    assert unsafe_entry(Entry("symlink", "a/b", "../c"), "tar") is None
    assert unsafe_entry(Entry("symlink", "a/b", "../../c"), "tar") is not None
    assert unsafe_entry(Entry("other:c", "dev/null"), "tar") is not None
    assert unsafe_entry(Entry("file", "..\\evil"), "zip") is not None
    listing = ('-rw-r--r-- 0/0   3 2026-01-01 00:00 "./a \\"q\\" b"\n'
               'lrwxrwxrwx 0/0   0 2026-01-01 00:00 "./l -> x" -> "t\\303\\251"\n'
               'hrw-r--r-- 0/0   0 2026-01-01 00:00 "./h" link to "./a"\n')
    assert parse_tar_listing(listing) == [Entry("file", './a "q" b'),
                                          Entry("symlink", "./l -> x", "té"),
                                          Entry("hardlink", "./h", "./a")]


def test_delete_removes_only_what_it_created(ar: ArchiveType, conn: LocalConnector,
                                             tmp_path: Path) -> None:
    src = make_tar(tmp_path / "app.tar.gz", TREE)
    dest = tmp_path / "dest"
    (dest / "app").mkdir(parents=True)
    (dest / "app/mine.txt").write_text("not from the archive\n")
    (dest / "app/README").write_text("was here before\n")
    _, record = converge(ar, conn, {"src": str(src), "dest": str(dest)})
    assert record is not None
    assert "app" not in record["files"] and "app/README" not in record["files"]
    assert (dest / "app/README").read_bytes() == b"readme\n"  # tar overwrote it
    delete(ar, conn, record)
    assert tree(dest) == ["app", "app/README", "app/mine.txt"]
    assert ar.read(conn, [ReadItem(None, record)]) == [None]


def test_delete_never_follows_a_symlink(ar: ArchiveType, conn: LocalConnector,
                                        tmp_path: Path) -> None:
    src = make_tar(tmp_path / "app.tar.gz", TREE)
    dest = tmp_path / "dest"
    dest.mkdir()
    _, record = converge(ar, conn, {"src": str(src), "dest": str(dest)})
    assert record is not None
    outside = tmp_path / "outside"
    (outside / "lib").mkdir(parents=True)
    (outside / "lib/x.txt").write_text("keep me\n")
    shutil.rmtree(dest / "app/lib")
    os.symlink(outside / "lib", dest / "app/lib")
    delete(ar, conn, record)
    assert (outside / "lib/x.txt").read_text() == "keep me\n"
    assert not (dest / "app/bin").exists()


def test_new_archive_is_extracted_again(ar: ArchiveType, conn: LocalConnector,
                                        tmp_path: Path) -> None:
    src = tmp_path / "app.tar.gz"
    make_tar(src, TREE)
    dest = tmp_path / "dest"
    dest.mkdir()
    attrs = {"src": str(src), "dest": str(dest), "creates": str(dest / "app/bin/run")}
    _, record = converge(ar, conn, attrs)
    assert record is not None
    make_tar(src, {**TREE, "app/lib/new.txt": b"new\n", "app/README": b"readme 2\n"})
    change = plan(ar, conn, attrs, record)
    assert change.action is Action.UPDATE  # though creates exists: the archive is new
    assert [c.name for c in change.changes] == ["archive_sha256"]
    new = ar.apply(conn, change)
    assert new is not None and "app/lib/new.txt" in new["files"]
    assert (dest / "app/README").read_bytes() == b"readme 2\n"
    assert new["archive_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert plan(ar, conn, attrs, new).action is Action.NOOP


def test_missing_files_are_drift(ar: ArchiveType, conn: LocalConnector, tmp_path: Path
                                 ) -> None:
    src = make_tar(tmp_path / "app.tar.gz", TREE)
    dest = tmp_path / "dest"
    dest.mkdir()
    attrs = {"src": str(src), "dest": str(dest)}
    _, record = converge(ar, conn, attrs)
    (dest / "app/lib/x.txt").unlink()
    change = plan(ar, conn, attrs, record)
    assert change.action is Action.UPDATE and [c.name for c in change.changes] == ["files"]
    assert "app/lib/x.txt" in str(change.changes[0].before)
    assert ar.apply(conn, change) == record
    assert (dest / "app/lib/x.txt").exists()


def test_creates_adopts_without_extracting(ar: ArchiveType, conn: LocalConnector,
                                           tmp_path: Path) -> None:
    src = make_tar(tmp_path / "app.tar.gz", TREE)
    dest = tmp_path / "dest"
    (dest / "app").mkdir(parents=True)
    (dest / "app/marker").write_text("")
    change = plan(ar, conn, {"src": str(src), "dest": str(dest),
                             "creates": str(dest / "app/marker")})
    assert change.action is Action.NOOP
    assert not ar.takes_over_as_created(change.before, {})
    assert tree(dest) == ["app", "app/marker"]


def test_missing_dest_and_src(ar: ArchiveType, conn: LocalConnector, tmp_path: Path) -> None:
    src = make_tar(tmp_path / "app.tar.gz", TREE)
    change = plan(ar, conn, {"src": str(src), "dest": str(tmp_path / "nope")})
    assert change.action is Action.CREATE
    with pytest.raises(ApplyError, match="not an existing directory"):
        ar.apply(conn, change)
    dest = tmp_path / "dest"
    dest.mkdir()
    change = plan(ar, conn, {"src": str(tmp_path / "none.tar.gz"), "dest": str(dest)})
    with pytest.raises(ApplyError, match="does not exist"):
        ar.apply(conn, change)


def test_not_an_archive(ar: ArchiveType, conn: LocalConnector, tmp_path: Path) -> None:
    src = tmp_path / "junk.tar.gz"
    src.write_bytes(b"this is not a tarball\n" * 10)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(ApplyError, match="cannot list"):
        ar.apply(conn, plan(ar, conn, {"src": str(src), "dest": str(dest)}))
    assert tree(dest) == []


@needs_root
def test_owner_and_group(ar: ArchiveType, conn: LocalConnector, tmp_path: Path) -> None:
    src = make_tar(tmp_path / "app.tar.gz", TREE)
    dest = tmp_path / "dest"
    dest.mkdir()
    attrs = {"src": str(src), "dest": str(dest), "group": "nogroup"}
    _, record = converge(ar, conn, attrs)
    import grp

    nogroup = grp.getgrnam("nogroup").gr_gid
    assert all((dest / n).lstat().st_gid == nogroup for n in record["files"])  # type: ignore[index]
    assert dest.stat().st_gid != nogroup  # dest was not made by the extraction
    change = plan(ar, conn, {**attrs, "group": "root"}, record)
    assert [c.name for c in change.changes] == ["group"]
    ar.apply(conn, change)
    assert (dest / "app/README").stat().st_gid == 0


def test_check(ar: ArchiveType) -> None:
    assert ar.check({"src": "/tmp/a.bin", "dest": "/tmp/d"})
    assert ar.check({"src": "/tmp/a.bin", "dest": "/tmp/d", "format": "tar"}) == []
    assert ar.check({"src": "/tmp/a.TAR.XZ", "dest": "/tmp/d"}) == []


# -- through the CLI: a download and the archive it feeds -----------------------------------

STACK = '''
from tectum.host import Archive, Directory, Download

dest = Directory("dest", path="{dest}")
tarball = Download("app", path="{path}", url="{url}", checksum="{checksum}")
Archive("app", src=tarball.path, dest=dest.path, creates="{dest}/app/bin/run")
'''


def test_stack_downloads_and_unpacks(tectum: Callable[..., Any],
                                     make_project: Callable[..., Path], server: Server,
                                     tmp_path: Path) -> None:
    dest, path = tmp_path / "dest", tmp_path / "app.tar.gz"
    v1 = make_tar(tmp_path / "v1.tar.gz", TREE)
    checksum = server.publish("app-1.tar.gz", v1.read_bytes())
    project = make_project(STACK.format(dest=dest, path=path, url=server.url("app-1.tar.gz"),
                                        checksum=checksum))
    result = tectum("apply", "--auto-approve", cwd=project)
    assert result.returncode == 0, result.output
    assert (dest / "app/bin/run").read_bytes() == TREE["app/bin/run"]
    assert len(server.requests) == 1

    result = tectum("plan", "--detailed-exitcode", cwd=project)
    assert result.returncode == 0, result.output
    assert len(server.requests) == 1  # a no-op plan makes no network access

    # a new release: the download changes, and the archive is unpacked again in the same run
    v2 = make_tar(tmp_path / "v2.tar.gz", {**TREE, "app/lib/v2.txt": b"two\n"})
    checksum2 = server.publish("app-2.tar.gz", v2.read_bytes())
    (project / "stack.py").write_text(STACK.format(
        dest=dest, path=path, url=server.url("app-2.tar.gz"), checksum=checksum2))
    result = tectum("plan", "--detailed-exitcode", cwd=project)
    assert result.returncode == 2, result.output
    assert "download.app" in result.output and "archive.app" in result.output
    result = tectum("apply", "--auto-approve", cwd=project)
    assert result.returncode == 0, result.output
    assert (dest / "app/lib/v2.txt").read_bytes() == b"two\n"
    result = tectum("plan", "--detailed-exitcode", cwd=project)
    assert result.returncode == 0, result.output

    result = tectum("destroy", "--auto-approve", cwd=project)
    assert result.returncode == 0, result.output
    assert not dest.exists() and not path.exists()


def test_missing_checksum_is_a_validate_error(tectum: Callable[..., Any],
                                              make_project: Callable[..., Path],
                                              tmp_path: Path) -> None:
    project = make_project(f'''
        from tectum.host import Download
        Download("tool", path="{tmp_path}/tool", url="https://example.org/tool")
        ''')
    result = tectum("validate", cwd=project)
    assert result.returncode == 1, result.output
    assert "download.tool" in result.output
    assert "checksum is not set" in result.output
    assert "insecure_skip_checksum=True" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "tool").exists()


# -- over SSH: a fleet host fetches from a server on the bridge address --------------------

@pytest.fixture(scope="module")
def fleet() -> Iterator[Any]:
    from tests.harness.fleet import Fleet

    with Fleet(1, apt=True) as fleet:
        yield fleet


@pytest.fixture
def remote(fleet: Any) -> Iterator[tuple[Any, str]]:
    """An SSH connector to the fleet host and a fresh directory there."""
    import secrets

    from tectum.providers.host.ssh import SSHConnector

    host = fleet.hosts[0]
    base = f"/srv/tectum-dl-{secrets.token_hex(4)}"
    fleet.run(host.name, f"mkdir -p {base}", check=True)
    c = SSHConnector(host.name, host.address, port=host.port, key_path=host.key_path,
                     known_hosts=host.known_hosts, log_path="")
    try:
        yield c, base
    finally:
        c.close()
        fleet.run(host.name, f"rm -rf {base}")


@pytest.fixture
def bridge_server(tmp_path: Path) -> Iterator[Server]:
    from tests.harness.fleet import BRIDGE_ADDRESS

    root = tmp_path / "www"
    root.mkdir()
    srv = Server(root, BRIDGE_ADDRESS)
    try:
        yield srv
    finally:
        srv.close()


def _read_prefetched(rt: Any, c: Any, attrs: dict[str, Any],
                     prior: dict[str, Any] | None = None) -> ResourceChange:
    """Plan as the provider does: one prefetch round trip, then the read from memory (an
    extraction's recorded entries: one more stat round trip)."""
    desired = rt.prepare(attrs, "/")
    c.prefetch(rt.facts([desired]))
    trips = c.round_trips
    try:
        observed = rt.read(c, [ReadItem(desired, prior)])[0]
        extra = 1 if prior is not None and prior.get("files") else 0
        assert c.round_trips - trips <= extra, "the read left the prefetched facts"
    finally:
        c.forget_facts()
    action, changes = rt.plan(desired, observed, prior)
    return ResourceChange(address=f"{rt.name}.x", type=rt.name, action=action,
                          before=rt.stored(observed) if observed is not None else None,
                          after=desired, changes=changes, prior=prior)


@pytest.mark.fleet
@pytest.mark.skipif(os.geteuid() != 0, reason="the fleet harness needs root")
def test_download_and_archive_over_ssh(fleet: Any, remote: tuple[Any, str],
                                       bridge_server: Server, tmp_path: Path,
                                       dl: DownloadType, ar: ArchiveType) -> None:
    c, base = remote
    host = fleet.hosts[0].name
    tarball = make_tar(tmp_path / "app.tar.gz", TREE)
    checksum = bridge_server.publish("app.tar.gz", tarball.read_bytes())
    attrs = {"path": f"{base}/app.tar.gz", "url": bridge_server.url("app.tar.gz"),
             "checksum": checksum, "mode": "0640"}

    # the minimal host has neither curl nor wget: a clear error, nothing left behind
    if fleet.run(host, "command -v curl || command -v wget").returncode != 0:
        change = _read_prefetched(dl, c, attrs)
        with pytest.raises(ApplyError, match="neither curl nor wget"):
            dl.apply(c, change)
        assert fleet.run(host, f"ls -A {base}").stdout == ""
        fleet.run(host, "DEBIAN_FRONTEND=noninteractive apt-get install -y -q curl",
                  check=True, timeout=300)

    change = _read_prefetched(dl, c, attrs)
    assert change.action is Action.CREATE
    record = dl.apply(c, change)
    assert record is not None and record["mode"] == "0640"
    got = fleet.run(host, f"sha256sum {base}/app.tar.gz", check=True).stdout.split()[0]
    assert "sha256:" + got == checksum
    again = _read_prefetched(dl, c, attrs, record)
    assert again.action is Action.NOOP and len(bridge_server.requests) == 1

    fleet.run(host, f"echo edited > {base}/app.tar.gz", check=True)
    drift = _read_prefetched(dl, c, attrs, record)
    assert [ch.name for ch in drift.changes] == ["checksum"]
    assert dl.apply(c, drift) == record

    wrong = {**attrs, "checksum": "sha256:" + "0" * 64}
    with pytest.raises(ApplyError, match="checksum mismatch"):
        dl.apply(c, _read_prefetched(dl, c, wrong, record))
    assert fleet.run(host, f"sha256sum {base}/app.tar.gz").stdout.split()[0] == got
    assert ".tectum-" not in fleet.run(host, f"ls -A {base}").stdout

    # the archive it feeds
    fleet.run(host, f"mkdir {base}/dest", check=True)
    spec = {"src": f"{base}/app.tar.gz", "dest": f"{base}/dest", "group": "nogroup"}
    change = _read_prefetched(ar, c, spec)
    assert change.action is Action.CREATE
    unpacked = ar.apply(c, change)
    assert unpacked is not None and "app/bin/run" in unpacked["files"]
    listing = fleet.run(host, f"cd {base}/dest && find . -printf '%p %g\\n' | sort",
                        check=True).stdout
    assert "./app/bin/run nogroup" in listing and "./app/lib/x.txt nogroup" in listing
    assert _read_prefetched(ar, c, spec, unpacked).action is Action.NOOP

    # a malicious archive is refused on the host too
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        _symlink("etc", "/etc")(tar)
    c.write_file(f"{base}/evil.tar.gz", evil.read_bytes(), mode=None, owner=None, group=None)
    fleet.run(host, f"mkdir {base}/evil", check=True)
    with pytest.raises(ApplyError, match="the entry 'etc'"):
        ar.apply(c, _read_prefetched(ar, c, {"src": f"{base}/evil.tar.gz",
                                             "dest": f"{base}/evil"}))
    assert fleet.run(host, f"ls -A {base}/evil").stdout == ""

    delete_change = ResourceChange(address="archive.x", type="archive", action=Action.DELETE,
                                   before=None, after=None, prior=unpacked)
    assert ar.apply(c, delete_change) is None
    assert fleet.run(host, f"ls -A {base}/dest").stdout == ""
