"""``apt_repository`` and the apt cache refresh of ``package`` (``update_cache`` /
``cache_valid_time``), against a real apt repository made by each test.

:func:`local_repo` builds a one-package repository under ``tmp_path``: a ``.deb`` with a unique
name (``dpkg-deb --build``), its ``Packages`` index and ``Release`` file (``apt-ftparchive``),
signed with a throw-away ``gpg`` key (``GNUPGHOME`` under ``tmp_path``), served over HTTP on
127.0.0.1 (apt fetches as its ``_apt`` user, which cannot read the test's private temporary
directory through a ``file:`` URI). Tests marked ``apt`` change this machine's apt sources and
packages, and put everything back by name: the ``.sources`` file and the keyring they made, the
package (purged), and — when a source was left — one more ``apt-get update``, so the machine's
package lists do not keep it.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tectum.plans.plan import Action, ResourceChange
from tectum.providers.base import ApplyError
from tectum.providers.host.apt import CACHE_CHANGE, REFRESH, PackageType, age_text
from tectum.providers.host.apt_repository import (
    AptRepositoryType,
    parse_sources,
    render_sources,
    sources_path,
)
from tectum.providers.host.connector import LocalConnector
from tests.conftest import Result
from tests.providers.host.test_package import installed_version

TOOLS = ("dpkg-deb", "apt-ftparchive", "gpg", "apt-get")
needs_tools = pytest.mark.skipif(
    os.geteuid() != 0 or any(shutil.which(t) is None for t in TOOLS),
    reason="needs root, dpkg-deb, apt-ftparchive (apt-utils) and gpg")
apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
KEYRINGS = "/etc/apt/keyrings"


def run(*argv: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(list(argv), cwd=cwd, env=env, capture_output=True, text=True,
                          check=False, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"{argv}: {proc.stderr or proc.stdout}"
    return proc.stdout


@dataclass
class LocalRepo:
    """A served one-package repository: ``package`` (version 1.0), ``uri``, suite ``stable``,
    component ``main``; ``key`` the armored public key that signs it, ``other_key`` one
    that does not."""

    package: str
    uri: str
    key: str
    other_key: str
    root: Path

    @property
    def lists_prefix(self) -> str:
        """How apt names this repository's files in /var/lib/apt/lists."""
        return self.uri.removeprefix("http://").rstrip("/").replace("/", "_") + "_"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def local_repo(tmp: Path) -> Iterator[LocalRepo]:
    """Build, sign and serve a repository (see the module docstring); stop serving after."""
    name = f"tectum-test-{secrets.token_hex(4)}"
    arch = run("dpkg", "--print-architecture").strip()
    pkg = tmp / "pkg"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "usr/share/doc" / name).mkdir(parents=True)
    (pkg / "usr/share/doc" / name / "README").write_text("a tectum test package\n")
    (pkg / "DEBIAN/control").write_text(
        f"Package: {name}\nVersion: 1.0\nArchitecture: all\n"
        "Maintainer: tectum tests <tests@invalid>\n"
        "Description: throw-away package of a tectum test\n")
    repo = tmp / "repo"
    index = repo / "dists/stable/main" / f"binary-{arch}"
    index.mkdir(parents=True)
    (repo / "pool").mkdir()
    run("dpkg-deb", "--root-owner-group", "--build", str(pkg),
        str(repo / "pool" / f"{name}_1.0_all.deb"))
    (index / "Packages").write_text(run("apt-ftparchive", "packages", "pool", cwd=repo))
    release = run("apt-ftparchive", "-o", "APT::FTPArchive::Release::Suite=stable",
                  "-o", "APT::FTPArchive::Release::Components=main",
                  "-o", f"APT::FTPArchive::Release::Architectures={arch}",
                  "release", "dists/stable", cwd=repo)
    (repo / "dists/stable/Release").write_text(release)
    keys = []
    for which in ("signer", "other"):
        home = tmp / f"gnupg-{which}"
        home.mkdir(mode=0o700)
        env = {**os.environ, "GNUPGHOME": str(home)}
        run("gpg", "--batch", "--passphrase", "", "--quick-gen-key",
            f"tectum test {which} <{which}@invalid>", "ed25519", "sign", "never", env=env)
        keys.append(run("gpg", "--batch", "--armor", "--export", env=env))
        if which == "signer":
            run("gpg", "--batch", "--yes", "--clearsign", "-o",
                str(repo / "dists/stable/InRelease"), str(repo / "dists/stable/Release"),
                env=env)
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(repo)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield LocalRepo(name, f"http://127.0.0.1:{server.server_address[1]}/", keys[0],
                        keys[1], repo)
    finally:
        server.shutdown()
        server.server_close()


def cleanup(repo: LocalRepo, *keyrings: str) -> None:
    """Put the machine back: the repository's sources file, ``keyrings``, the package."""
    source = sources_path(repo.package)
    left = os.path.exists(source)
    for path in (source, *keyrings):
        if os.path.lexists(path):
            os.unlink(path)
    if installed_version(repo.package) is not None or _dpkg_knows(repo.package):
        subprocess.run(["dpkg", "--purge", repo.package], capture_output=True, check=False)
    if left or any(f.startswith(repo.lists_prefix) for f in os.listdir("/var/lib/apt/lists")):
        subprocess.run(["apt-get", "update", "-q", "-o", "DPkg::Lock::Timeout=120"],
                       capture_output=True, env=apt_env, check=False)


def _dpkg_knows(name: str) -> bool:
    return subprocess.run(["dpkg-query", "-W", name], capture_output=True,
                          check=False).returncode == 0


def lists_of(repo: LocalRepo) -> list[str]:
    return [f for f in os.listdir("/var/lib/apt/lists") if f.startswith(repo.lists_prefix)]


def keyring_path(repo: LocalRepo) -> str:
    return f"{KEYRINGS}/{repo.package}.asc"


# -- without apt: the file format, validation and the plans --------------------------------
def test_render_and_parse_round_trip() -> None:
    rt = AptRepositoryType()
    want = rt.prepare({"name": "example", "uris": "https://apt.example.org/debian",
                       "suites": ["bookworm", "bookworm-updates"], "components": "main contrib",
                       "signed_by": "/etc/apt/keyrings/example.asc",
                       "options": {"Check-Valid-Until": "no"}}, ".")
    text = render_sources(want)
    assert text.splitlines()[1:] == [
        "Types: deb", "URIs: https://apt.example.org/debian",
        "Suites: bookworm bookworm-updates", "Components: main contrib",
        "Signed-By: /etc/apt/keyrings/example.asc", "Enabled: yes", "Check-Valid-Until: no"]
    stanzas = parse_sources(text + "\n# a comment\n\nTypes: deb-src\nURIs: x:y\n Z\n")
    assert len(stanzas) == 2 and stanzas[1] == {"Types": "deb-src", "URIs": "x:y\nZ"}
    with pytest.raises(ValueError, match="not a deb822 field"):
        parse_sources("deb http://x bookworm main\n")


@pytest.mark.parametrize(("attr", "value", "message"), [
    ("name", "my repo", "apt ignores files"),
    ("name", "nginx.sources", "write 'nginx'"),
    ("uris", ["apt.example.org/debian"], "is not a URI"),
    ("uris", [], "at least one URI"),
    ("types", ["rpm"], "is not a type"),
    ("signed_by", "https://apt.example.org/key.asc", "put the key in a File resource"),
    ("signed_by", "/etc/apt/keyrings/../x.asc", "normal form"),
    ("options", {"Signed-By": "/x"}, "with the attribute 'signed_by'"),
    ("architectures", ["AMD64"], "not a Debian architecture"),
])
def test_invalid_values_are_refused_with_a_hint(attr: str, value: Any, message: str) -> None:
    problem = AptRepositoryType.schema.attrs[attr].check(value)
    assert problem is not None and message in problem, problem


def test_components_rules() -> None:
    rt = AptRepositoryType()
    base = {"name": "x", "uris": ["https://apt.example.org/"]}
    assert rt.check({**base, "suites": ["stable"], "components": ["main"]}) == []
    assert rt.check({**base, "suites": ["./"]}) == []
    assert "Set components" in rt.check({**base, "suites": ["stable"]})[0]
    assert "remove components" in rt.check({**base, "suites": ["./"], "components": ["a"]})[0]


def test_package_plans_a_cache_refresh_from_the_cache_age() -> None:
    """The ``apt cache`` change: cache_valid_time against the age the read found;
    update_cache alone only with an install."""
    rt = PackageType()
    installed = {"name": "tree", "ensure": "present", "version": "2.1.0-1"}
    valid = {"name": "tree", "ensure": "present", "cache_valid_time": 3600}
    assert rt.plan(valid, {**installed, "_cache_age": 60}, None) == (Action.NOOP, [])
    action, changes = rt.plan(valid, {**installed, "_cache_age": 7300}, None)
    assert action is Action.UPDATE
    assert [(c.name, c.before, c.after) for c in changes] == [
        (CACHE_CHANGE, "updated 2 h 1 min ago", REFRESH)]
    action, changes = rt.plan(valid, {**installed, "ensure": "absent", "_cache_age": None}, None)
    assert action is Action.CREATE and changes[-1].before == "never updated"
    alone = {"name": "tree", "ensure": "present", "update_cache": True}
    assert rt.plan(alone, {**installed, "_cache_age": 10 ** 6}, None) == (Action.NOOP, [])
    action, changes = rt.plan(alone, {**installed, "ensure": "absent", "_cache_age": 5}, None)
    assert action is Action.CREATE and changes[-1].name == CACHE_CHANGE
    assert age_text(50) == "updated 50 s ago" and age_text(3 * 86400) == "updated 3 days ago"


def test_package_cache_options_are_checked() -> None:
    rt = PackageType()
    assert "only used with ensure" in rt.check({"name": "x", "ensure": "absent",
                                                "update_cache": True})[0]
    assert "remove one of them" in rt.check({"name": "x", "update_cache": False,
                                             "cache_valid_time": 60})[0]
    assert rt.schema.attrs["cache_valid_time"].check(0) is not None


def test_cache_age_is_read_in_the_prefetch() -> None:
    """The age comes from read-only commands in the fact request (one round trip), and
    only when a package asks for it."""
    rt = PackageType()
    assert len(rt.facts([{"name": "tree"}]).commands) == 1
    facts = rt.facts([{"name": "tree"}, {"name": "pv", "cache_valid_time": 60}])
    assert len(facts.commands) == 3
    conn = LocalConnector()
    seen = rt.read_objects(conn, [{"name": "tree"}, {"name": "pv", "cache_valid_time": 60}])
    assert seen[0] is not None and "_cache_age" not in seen[0]
    assert seen[1] is not None and "_cache_age" in seen[1]
    assert not [e for e in conn.log if e["mutating"]]


# -- with apt: a real repository ------------------------------------------------------------
def _stack(root: Path, repo: LocalRepo, *, valid: int = 3600, with_repo: bool = True) -> None:
    lines = ["from tectum.host import AptRepository, File, Package",
             f"key = File('key', path={keyring_path(repo)!r}, content={repo.key!r})"]
    if with_repo:
        lines += [
            f"repo = AptRepository({repo.package!r}, uris=[{repo.uri!r}], suites=['stable'],",
            "                      components=['main'], signed_by=key.path)",
            f"Package({repo.package!r}, depends_on=[repo], cache_valid_time={valid})"]
    (root / "stack.py").write_text("\n".join(lines) + "\n")


def _log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    path.unlink()
    return entries


def _apt_runs(entries: list[dict[str, Any]], verb: str) -> list[dict[str, Any]]:
    return [e for e in entries if e.get("argv", [None, None])[:2] == ["apt-get", verb]]


@pytest.mark.apt
@needs_tools
def test_repository_and_package_converge_in_one_apply(
        tmp_path: Path, tectum: Callable[..., Result]) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    log = tmp_path / "commands.jsonl"
    env = {"TECTUM_COMMAND_LOG": str(log)}
    with local_repo(tmp_path) as repo:
        try:
            _stack(root, repo)
            plan = tectum("plan", cwd=root, env=env)
            assert plan.returncode == 0 and CACHE_CHANGE in plan.stdout, plan.output
            _log(log)
            res = tectum("apply", "-auto-approve", cwd=root, env=env)
            assert res.returncode == 0, res.output
            assert installed_version(repo.package) == "1.0"
            text = Path(sources_path(repo.package)).read_text()
            assert f"URIs: {repo.uri}\n" in text and \
                f"Signed-By: {keyring_path(repo)}\n" in text
            ops = [(e.get("argv") or [None, None])[:2] for e in _log(log)]
            # the repository's refresh comes before the install that needs it
            assert ops.index(["apt-get", "update"]) < ops.index(["apt-get", "install"])

            # a no-op plan with a fresh cache runs no apt-get update, and mutates nothing
            noop = tectum("plan", "-detailed-exitcode", cwd=root, env=env)
            assert noop.returncode == 0, noop.output
            entries = _log(log)
            assert not _apt_runs(entries, "update") and not [e for e in entries
                                                             if e["mutating"]]

            # cache_valid_time: a cache older than it is refreshed, and nothing installed
            _stack(root, repo, valid=1)
            time.sleep(2.1)
            stale = tectum("plan", "-detailed-exitcode", cwd=root, env=env)
            assert stale.returncode == 2, stale.output
            assert CACHE_CHANGE in stale.stdout and REFRESH in stale.stdout, stale.output
            _log(log)
            assert tectum("apply", "-auto-approve", cwd=root, env=env).returncode == 0
            entries = _log(log)
            assert len(_apt_runs(entries, "update")) == 1
            assert not _apt_runs(entries, "install")
            _stack(root, repo, valid=3600)
            assert tectum("plan", "-detailed-exitcode", cwd=root).returncode == 0

            # drift: the file edited by hand is seen, attribute by attribute, and undone
            Path(sources_path(repo.package)).write_text(
                text.replace("Components: main", "Components: main contrib")
                + "Trusted: yes\n")
            drift = tectum("drift", cwd=root)
            assert "components" in drift.stdout and "options" in drift.stdout, drift.output
            # the repair refreshes the cache; the package's refresh, planned for a cache
            # older than 2 s, finds it fresh by then: one apt-get update, not two
            _stack(root, repo, valid=2)
            time.sleep(2.1)
            plan = tectum("plan", cwd=root)
            assert plan.stdout.count(f"{CACHE_CHANGE}:") == 2, plan.output
            _log(log)
            assert tectum("apply", "-auto-approve", cwd=root, env=env).returncode == 0
            assert len(_apt_runs(_log(log), "update")) == 1
            assert Path(sources_path(repo.package)).read_text() == text
            _stack(root, repo, valid=3600)
            assert tectum("plan", "-detailed-exitcode", cwd=root).returncode == 0

            # delete: the package goes, then the source, and the lists drop it
            assert lists_of(repo)
            _stack(root, repo, with_repo=False)
            res = tectum("apply", "-auto-approve", cwd=root)
            assert res.returncode == 0, res.output
            assert installed_version(repo.package) is None
            assert not os.path.exists(sources_path(repo.package))
            assert lists_of(repo) == []
            assert tectum("destroy", "-auto-approve", cwd=root).returncode == 0
            assert not os.path.exists(keyring_path(repo))
        finally:
            cleanup(repo, keyring_path(repo))


@pytest.mark.apt
@needs_tools
def test_a_failed_refresh_puts_the_sources_back(tmp_path: Path) -> None:
    """A repository apt refuses (signed by another key; a URI with no repository): the apply
    fails with apt's message and the file is removed again (a new one) or restored (an
    update), so the host's apt keeps working."""
    rt = AptRepositoryType()
    conn = LocalConnector()
    with local_repo(tmp_path) as repo:
        wrong = f"{KEYRINGS}/{repo.package}-other.asc"
        right = keyring_path(repo)
        try:
            Path(wrong).write_text(repo.other_key)
            Path(right).write_text(repo.key)
            attrs = {"name": repo.package, "uris": [repo.uri], "suites": ["stable"],
                     "components": ["main"]}
            bad = rt.prepare({**attrs, "signed_by": wrong}, ".")
            action, changes = rt.plan(bad, None, None)
            refused = r"(?s)apt-get update failed.*not signed.*was removed again"
            with pytest.raises(ApplyError, match=refused):
                rt.apply(conn, ResourceChange("apt_repository.r", rt.name, action, None, bad,
                                              changes))
            assert not os.path.exists(sources_path(repo.package))

            good = rt.prepare({**attrs, "signed_by": right}, ".")
            action, changes = rt.plan(good, None, None)
            record = rt.apply(conn, ResourceChange("apt_repository.r", rt.name, action, None,
                                                   good, changes))
            text = Path(sources_path(repo.package)).read_text()
            observed = rt.read_objects(conn, [good])[0]
            assert observed is not None and record == rt.stored(observed)
            gone = rt.prepare({**attrs, "uris": [repo.uri + "missing/"], "signed_by": right},
                              ".")  # no repository there: apt finds no Release file
            action, changes = rt.plan(gone, observed, record)
            assert action is Action.UPDATE
            with pytest.raises(ApplyError, match="put back as it was"):
                rt.apply(conn, ResourceChange("apt_repository.r", rt.name, action,
                                              rt.stored(observed), gone, changes, prior=record))
            assert Path(sources_path(repo.package)).read_text() == text
        finally:
            cleanup(repo, wrong, right)
