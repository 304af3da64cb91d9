"""An injection corpus fed into every string argument of every host resource type, applied for
real over an :class:`SSHConnector` to a test host (``tests.harness.fleet``; no mocks).

Each of the :data:`CORPUS` payloads goes into each string attribute (file: path, content,
template vars, mode, owner, group; directory: path, mode, owner, group; symlink: path, target;
package: name, version; user: name, home, shell, comment, group, groups; group: name; service:
name; command: list argv items, the program, ``creates``, ``unless`` (list form), ``cwd``,
``environment`` keys and values), one attribute at a time, through the engine's own steps:
schema validation, ``check()``, ``prepare()``, read → plan → apply. The outcome is one of

* **exact**: the value arrived byte for byte, verified on the host independently of the
  resource type's own read (the overlay's upper directory seen from this machine, ``getent``,
  a command that writes its argv back to a file), the next plan is a no-op and the object is
  deleted again;
* **rejected**: ``Attr.check``/``check()``/``prepare()`` refused it (the engine's diagnostic
  names the attribute), or apply raised :class:`ApplyError` with a message naming the
  attribute or the value (no such user, no such package, program not found).

Anything else (another exception type, an altered value, a plan that is not a no-op after the
apply) is a failure. :data:`EXPECTED_REJECTIONS` pins, per attribute, which payloads must be
rejected; all others must arrive exactly. Payloads that could run something try to create
``/tmp/tectum-pwned-<n>``; the last test asserts that no ``tectum-pwned-*`` exists anywhere on
the host or on this machine. Everything a run makes on the host lives under ``/srv/tectum-inj-
<run id>`` or is an account removed again, so the module can run any number of times.
"""

from __future__ import annotations

import itertools
import os
import secrets
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tectum.plans.plan import Action, ResourceChange
from tectum.providers.base import ApplyError
from tectum.providers.host.apt import PackageType
from tectum.providers.host.base import HostType
from tectum.providers.host.command import CommandType
from tectum.providers.host.files import DirectoryType, FileType, SymlinkType
from tectum.providers.host.service import ServiceType
from tectum.providers.host.ssh import SSHConnector
from tectum.providers.host.users import GroupType, UserType
from tests.harness.fleet import Fleet

pytestmark = [
    pytest.mark.fleet,
    pytest.mark.skipif(os.geteuid() != 0, reason="the fleet harness needs root"),
]

RUN = secrets.token_hex(3)
ROOT = f"/srv/tectum-inj-{RUN}"
MARKER = "tectum-pwned-"

# -- the corpus ------------------------------------------------------------------------------
# (label, payload); "{m}" becomes this payload's marker file /tmp/tectum-pwned-<index>, "{r}" the
# relative tectum-pwned-<index> (in whatever directory the payload would run).
_RAW: list[tuple[str, str]] = [
    ("semicolon", "; touch {m}"),
    ("and", "&& touch {m}"),
    ("or", "|| touch {m}"),
    ("pipe", "| touch {m}"),
    ("background", "& touch {m} &"),
    ("dollar-paren", "$(touch {m})"),
    ("backticks", "`touch {m}`"),
    ("single-quote", "'; touch {m}; '"),
    ("double-quote", '"; touch {m}; "'),
    ("newline", "\ntouch {m}\n"),
    ("cr", "\rtouch {m}\r"),
    ("crlf", "x\r\ntouch {m}\r\n"),
    ("nul", "x\x00; touch {m}"),
    ("ifs", "${IFS}touch${IFS}{m}"),
    ("ifs-subst", "$(touch${IFS}{m})"),
    ("nested", "$(printf 'touch {m}' | sh)"),
    ("escaped", "\\$(touch {m})\\"),
    ("redirect", "> {m}"),
    ("append", ">> {m} 2>&1"),
    ("heredoc", "<<EOF\ntouch {m}\nEOF"),
    ("comment", "#; touch {m}"),
    ("ifs-assign", "IFS=/; touch {m}"),
    ("eval", "eval 'touch {m}'"),
    ("brace", "{touch,{m}}"),
    ("option-inject", "--version; touch {m}"),
    ("option-value", "--output={m}"),
    ("dash", "-"),
    ("double-dash", "--"),
    ("option", "-rf"),
    ("long-option", "--help"),
    ("star", "*"),
    ("question", "?"),
    ("class", "[a-z]*"),
    ("tilde", "~"),
    ("tilde-user", "~root"),
    ("tilde-path", "~/.ssh"),
    ("home-var", "$HOME"),
    ("path-var", "${PATH}"),
    ("positional", "$1 $@ $0 $$"),
    ("history", "!!"),
    ("dot", "."),
    ("dotdot", ".."),
    ("traversal", "../traversal"),
    ("spaces", "a b  c"),
    ("space", " "),
    ("whitespace", " \t \v\f "),
    ("empty", ""),
    ("format", "%n%s%x%p"),
    ("printf-escapes", "\\n\\x41\\101\\c"),
    ("ansi", "\x1b[31mred\x1b[0m\x1b]0;title\x07"),
    ("control", "\x01\x02\x7f\x08"),
    ("unicode", "ünïcødé € 日本語 🙂"),
    ("bidi", "\u202etxt.exe"),
    ("unicode-space", "\u00a0\u2028\u2029"),
    ("non-utf8", b"bad\xffname".decode("utf-8", "surrogateescape")),
    ("non-utf8-seq", (b"\xc3\x28 latin-1 \xe9 \x80").decode("utf-8", "surrogateescape")),
    ("lone-surrogate", "\ud800"),
    ("jinja", "{{ 7*7 }}{% raw %}{#"),
    ("plus-zero", "+0"),
    ("space-zero", " 0"),
    ("valid-name", "tectum-name-ok"),
    ("dollar-end", "tinj$"),
    ("quotes-all", "' \" ` $ \\ ! ; & | < > ( ) { } [ ] * ? ~ #"),
    ("colon", "x:0:0::/root:/bin/sh"),
    ("comma", "a,b"),
    ("long-5000", "a" * 5000),
    ("long-100000", "b" * 100000),
    ("deep-path", ("d" * 200 + "/") * 19 + "e" * 100),
    ("relative", "; touch {r} #"),
]
CORPUS: list[tuple[str, str]] = [
    (label, text.replace("{m}", f"/tmp/{MARKER}{i}").replace("{r}", f"{MARKER}{i}"))
    for i, (label, text) in enumerate(_RAW)
]
LABELS = [label for label, _ in CORPUS]


PAYLOAD = dict(CORPUS)
ALL = frozenset(LABELS)


def raw(value: str) -> bytes:
    """The bytes a str stands for (undecodable bytes come as surrogateescape characters)."""
    return value.encode("utf-8", "surrogateescape")


def short(value: str, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(value)} chars)"


def passwd_name(value: str) -> bool:
    """Whether ``getpwnam``/``getgrnam`` can find an /etc/passwd or /etc/group entry named
    VALUE: no ':' or newline, not a ``+``/``-`` compat line or a ``#`` comment, no leading
    whitespace (the files backend skips it), not numeric (coreutils would take it for an id)."""
    try:
        value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return False
    return (0 < len(value) <= 200 and not any(c in value for c in ":\n\x00")
            and value[0] not in "+-#" and not value[0].isspace()
            and not value.strip().lstrip("+").isdigit())


# -- what each attribute must reject (every other payload must arrive exactly) ----------------

#: no absolute path starts with a payload
BARE = ALL
#: a path below a directory: "ROOT/x/<payload>"
PATH = frozenset({
    "nul",  # NUL ends a C string
    "empty",  # ends with "/"
    "dot", "dotdot",  # ends with /. or /..: names another object
    "traversal",  # holds /../: not in normal form (a path names its object directly)
    "lone-surrogate",  # neither a character nor a byte
    "long-5000", "long-100000",  # a name longer than NAME_MAX
})
#: invalid text: lone surrogates (file content is text, written as UTF-8)
NOT_TEXT = frozenset({"non-utf8", "non-utf8-seq", "lone-surrogate"})
#: an owner/group: validation refuses these, the host has no account for the others
OWNER_INVALID = frozenset({"empty", "nul", "lone-surrogate", "plus-zero", "space-zero"})
OWNER = OWNER_INVALID | {label for label, p in CORPUS if not passwd_name(p)}
#: a passwd field (comment, home, shell): control characters, line breaks, ':', undecodable
PASSWD_FIELD = frozenset({
    "nul", "newline", "cr", "crlf", "heredoc", "whitespace", "ansi", "control",
    "unicode-space", "non-utf8", "non-utf8-seq", "lone-surrogate", "colon",
})
#: names valid for useradd/groupadd (and env var names): everything else is refused
ACCOUNT_NAMES = frozenset({"valid-name", "dollar-end"})
ENV_NAMES = frozenset({"long-5000", "long-100000"})
#: a command's argument, an environment value: anything but NUL and lone surrogates
ARGUMENT = frozenset({"nul", "lone-surrogate"})

EXPECTED_REJECTIONS: dict[str, frozenset[str]] = {
    "file.path": PATH,
    "file.path (bare)": BARE,
    "file.content": NOT_TEXT,
    "file.vars": NOT_TEXT,
    "file.mode": ALL,
    "file.owner": OWNER,
    "file.group": OWNER,
    "directory.path": PATH,
    "directory.path (bare)": BARE,
    "directory.mode": ALL,
    "directory.owner": OWNER,
    "directory.group": OWNER,
    "symlink.path": PATH,
    "symlink.path (bare)": BARE,
    "symlink.target": frozenset({"empty", "nul", "lone-surrogate", "long-5000",
                                 "long-100000"}),
    "package.name": ALL,  # the few valid names are not in the archive: apt says so
    "package.version": ALL,
    "user.name": ALL - ACCOUNT_NAMES,
    "user.home": PASSWD_FIELD | {"long-5000", "long-100000"},
    "user.home (bare)": BARE,
    "user.shell": PASSWD_FIELD | {"long-5000", "long-100000"},
    "user.shell (bare)": BARE,
    "user.comment": PASSWD_FIELD | {"long-100000"},
    "user.group": ALL,  # the valid names name no group: useradd says so
    "user.groups": ALL,
    "group.name": ALL - ACCOUNT_NAMES,
    "service.name": ALL,  # the valid names name no service on the host
    "command.command[i]": ARGUMENT,
    "command.command[0]": ALL,  # no such program (exit 127), or invalid
    "command.creates": ARGUMENT | {"long-5000", "long-100000"},
    "command.creates (bare)": BARE,
    "command.unless[i]": ARGUMENT,
    "command.cwd": PATH - {"empty", "dot", "dotdot", "traversal"},
    "command.cwd (bare)": BARE,
    "command.environment key": ALL - ENV_NAMES,
    "command.environment value": ARGUMENT,
}

#: words one of which a rejection by check()/prepare()/read/apply must contain (besides the
#: attribute's own name, or the start of the value); schema rejections are named by the engine
NAMING: dict[str, tuple[str, ...]] = {
    "owner": ("user",),
    "name": ("package", "user", "group", "service"),
    "version": ("tree",),
    "vars": ("template",),
}


# -- outcomes --------------------------------------------------------------------------------

class Rejected(Exception):
    """A value refused by validation (stage schema/check/prepare), a read or an apply."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(f"{stage}: {message}")
        self.stage = stage
        self.message = message


@dataclass
class Outcome:
    kind: str  # "exact", "rejected" or "error"
    stage: str = ""
    message: str = ""


#: attribute label → payload label → outcome (filled by the tests, printed by the last one)
OUTCOMES: dict[str, dict[str, Outcome]] = {}


@dataclass
class Host:
    """The test host, one SSH connection to it, and what the tests declared on it."""

    fleet: Fleet
    name: str
    conn: SSHConnector
    template_dir: Path
    #: every path value applied on the host (the marker scan allows these under ROOT)
    declared: set[str] = field(default_factory=set)
    counter: Iterator[int] = field(default_factory=itertools.count)  # thread-safe next()

    def upper(self, path: str) -> Path:
        """PATH on the host, seen from this machine through the overlay's upper directory."""
        return self.fleet.upper(self.name) / path.lstrip("/")

    def scratch(self, what: str) -> str:
        """A fresh directory path under ROOT (not created)."""
        return f"{ROOT}/{what}/{next(self.counter)}"

    def fresh_name(self) -> str:
        return f"tinj{RUN}u{next(self.counter)}"

    def sh(self, script: str, *args: str, input: bytes | None = None) -> bytes:
        res = self.conn.run(["/bin/sh", "-c", script, "sh", *args], input=input)
        assert res.ok, (script, res.returncode, res.stderr[-500:])
        return res.stdout

    def mkdir_p(self, path: str) -> None:
        self.declared.add(path)
        self.sh('mkdir -p -- "$1"', path)


def validated(rt: HostType, attrs: dict[str, Any], base_dir: str = "/") -> dict[str, Any]:
    """What the engine does before planning: each attribute against the schema (its
    diagnostic reads ``Attribute 'NAME': PROBLEM``), ``check()``, then ``prepare()``."""
    problems = [f"Attribute {key!r}: {problem}." for key, value in attrs.items()
                if (problem := rt.schema.attrs[key].check(value)) is not None]
    if problems:
        raise Rejected("schema", " ".join(problems))
    problems = rt.check(attrs)
    if problems:
        raise Rejected("check", " ".join(problems))
    try:
        return rt.prepare(attrs, base_dir)
    except ValueError as exc:
        raise Rejected("prepare", str(exc)) from None


def plan(rt: HostType, conn: SSHConnector, desired: dict[str, Any],
         prior: dict[str, Any] | None = None) -> ResourceChange:
    try:
        observed = rt.read_objects(conn, [desired])[0]
    except ApplyError as exc:  # the engine reports a failed read as a diagnostic
        raise Rejected("read", str(exc)) from None
    action, changes = rt.plan(desired, observed, prior)
    before = observed if rt.name == "command" else (
        rt.stored(observed) if observed is not None else None)
    return ResourceChange(address=f"{rt.name}.inj", type=rt.name, action=action, before=before,
                          after=desired, changes=changes, prior=prior)


def apply(rt: HostType, conn: SSHConnector, change: ResourceChange) -> dict[str, Any] | None:
    try:
        return rt.apply(conn, change)
    except ApplyError as exc:
        raise Rejected("apply", str(exc)) from None


def create(rt: HostType, host: Host, attrs: dict[str, Any], base_dir: str = "/"
           ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validate, plan (must be a create) and apply; returns (desired, state)."""
    desired = validated(rt, attrs, base_dir)
    change = plan(rt, host.conn, desired)
    assert change.action is Action.CREATE, (change.action, change.changes)
    state = apply(rt, host.conn, change)
    assert state is not None
    return desired, state


def settle(rt: HostType, host: Host, desired: dict[str, Any], state: dict[str, Any]) -> None:
    """The next plan (a fresh read) is a no-op."""
    again = plan(rt, host.conn, desired, state)
    assert again.action is Action.NOOP, ("second plan", again.action, again.changes)


def delete(rt: HostType, host: Host, state: dict[str, Any]) -> None:
    change = ResourceChange(address=f"{rt.name}.inj", type=rt.name, action=Action.DELETE,
                            before=state, after=None, changes=[], prior=state)
    assert rt.apply(host.conn, change) is None


class Trials:
    """Runs one attribute's payloads, records the outcomes, collects problems."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def run(self, attr: str, case: Callable[[str], None], *,
            skip: frozenset[str] = frozenset(), workers: int = 4) -> None:
        """Try every payload (but SKIP) with CASE, WORKERS at a time (each case works on
        its own paths and names)."""

        def one(item: tuple[str, str]) -> Outcome:
            label, payload = item
            try:
                case(payload)
            except Rejected as rej:
                self._judge_rejection(attr, label, payload, rej)
                return Outcome("rejected", rej.stage, rej.message)
            except Exception as exc:  # noqa: BLE001 - any other failure is reported
                self.problems.append(f"{attr} <- {label} {short(payload)}: "
                                     f"{type(exc).__name__}: {str(exc)[:400]}")
                return Outcome("error", type(exc).__name__, str(exc)[:300])
            return Outcome("exact")

        todo = [(label, payload) for label, payload in CORPUS if label not in skip]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            outcomes = list(pool.map(one, todo))
        table = OUTCOMES.setdefault(attr, {})
        table.update((label, outcome) for (label, _), outcome in zip(todo, outcomes))
        expected = EXPECTED_REJECTIONS[attr]
        for label, outcome in table.items():
            want = "rejected" if label in expected else "exact"
            if outcome.kind != "error" and outcome.kind != want:
                self.problems.append(f"{attr} <- {label} {short(PAYLOAD[label])}: "
                                     f"{outcome.kind} ({outcome.stage}: "
                                     f"{outcome.message[:200]}), expected {want}")

    def _judge_rejection(self, attr: str, label: str, payload: str, rej: Rejected) -> None:
        message = rej.message
        if not message.strip() or "Traceback" in message:
            self.problems.append(f"{attr} <- {label}: unclear rejection {message!r}")
            return
        if rej.stage == "schema":
            return  # "Attribute 'NAME': ..." as the engine reports it
        base = attr.split(".", 1)[1].split("[", 1)[0].split(" ", 1)[0]
        words = (base, *NAMING.get(base, ()))
        if not any(w in message for w in words) and (not payload or payload[:20] not in message):
            self.problems.append(f"{attr} <- {label}: the {rej.stage} message names neither "
                                 f"the attribute nor the value: {message[:300]!r}")

    def check(self) -> None:
        assert not self.problems, "\n".join(self.problems)


# -- fixtures --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    templates = tmp_path_factory.mktemp("templates")
    (templates / "value.j2").write_text("{{ v }}", encoding="utf-8")
    with Fleet(1, apt=True) as fleet:
        h = fleet.hosts[0]
        conn = SSHConnector(h.name, h.address, port=h.port, key_path=h.key_path,
                            known_hosts=h.known_hosts, log_path="")
        target = Host(fleet, h.name, conn, templates)
        target.mkdir_p(ROOT)
        try:
            yield target
        finally:
            conn.run(["rm", "-rf", "--", ROOT])
            conn.close()


@pytest.fixture
def odd_accounts(host: Host) -> Iterator[None]:
    """A user and a group named like every payload that /etc/passwd can hold, so that
    ``owner``/``group`` payloads can arrive (and be seen) exactly; removed afterwards."""
    host.sh(f"cp -p /etc/passwd /etc/passwd.{RUN} && cp -p /etc/group /etc/group.{RUN}")
    names = [(62000 + i, raw(p)) for i, (_, p) in enumerate(CORPUS) if passwd_name(p)]
    try:
        host.sh("cat >> /etc/passwd", input=b"".join(
            b"%s:x:%d:%d::/nonexistent:/usr/sbin/nologin\n" % (n, i, i) for i, n in names))
        host.sh("cat >> /etc/group", input=b"".join(b"%s:x:%d:\n" % (n, i) for i, n in names))
        yield
    finally:
        host.sh(f"cat /etc/passwd.{RUN} > /etc/passwd && cat /etc/group.{RUN} > /etc/group && "
                f"rm -f -- /etc/passwd.{RUN} /etc/group.{RUN}")


# -- file, directory, symlink ----------------------------------------------------------------

def path_round_trip(rt: HostType, host: Host, attrs: dict[str, Any],
                    verify: Callable[[str], None], base_dir: str = "/") -> None:
    """Create at attrs["path"] (its directory made first), verify, plan again (no-op),
    delete, and check that it is gone."""
    path = attrs["path"]
    validated(rt, attrs, base_dir)
    host.mkdir_p(os.path.dirname(path))
    host.declared.add(path)
    desired, state = create(rt, host, attrs, base_dir)
    verify(path)
    settle(rt, host, desired, state)
    delete(rt, host, state)
    assert host.conn.stat_paths([path]) == [None]
    assert not os.path.lexists(host.upper(path))


def is_file(host: Host, text: str, **expect: str) -> Callable[[str], None]:
    def verify(path: str) -> None:
        data = raw(text)
        fact = host.conn.stat_paths([path], content=True)[0]
        assert fact is not None and fact.kind == "file" and fact.content == data, fact
        assert host.upper(path).read_bytes() == data
        for key, value in expect.items():
            assert getattr(fact, key) == value, (key, fact)
    return verify


def test_file(host: Host, odd_accounts: None) -> None:
    ft, trials = FileType(), Trials()

    def path(payload: str, *, embed: bool = True) -> None:
        where = f"{host.scratch('file-path')}/{payload}" if embed else payload
        body = f"file at {where!r}\n"
        path_round_trip(ft, host, {"path": where, "content": body}, is_file(host, body))

    def content(payload: str) -> None:
        path_round_trip(ft, host, {"path": f"{host.scratch('file-content')}/f",
                                   "content": payload}, is_file(host, payload))

    def template(payload: str) -> None:
        path_round_trip(ft, host, {"path": f"{host.scratch('file-vars')}/f",
                                   "template": "value.j2", "vars": {"v": payload}},
                        is_file(host, payload), str(host.template_dir))

    def attr(key: str) -> Callable[[str], None]:
        def case(payload: str) -> None:
            path_round_trip(ft, host, {"path": f"{host.scratch('file-' + key)}/f",
                                       "content": "x", key: payload},
                            is_file(host, "x", **({key: payload} if key != "mode" else {})))
        return case

    trials.run("file.path", path)
    trials.run("file.path (bare)", lambda p: path(p, embed=False))
    trials.run("file.content", content)
    trials.run("file.vars", template)
    trials.run("file.mode", attr("mode"))
    trials.run("file.owner", attr("owner"))
    trials.run("file.group", attr("group"))
    trials.check()


def test_directory(host: Host, odd_accounts: None) -> None:
    dt, trials = DirectoryType(), Trials()

    def is_dir(**expect: str) -> Callable[[str], None]:
        def verify(where: str) -> None:
            fact = host.conn.stat_paths([where])[0]
            assert fact is not None and fact.kind == "directory", fact
            for key, value in expect.items():
                assert getattr(fact, key) == value, (key, fact)
            assert host.upper(where).is_dir()
        return verify

    def path(payload: str, *, embed: bool = True) -> None:
        where = f"{host.scratch('dir-path')}/{payload}" if embed else payload
        path_round_trip(dt, host, {"path": where}, is_dir())

    def attr(key: str) -> Callable[[str], None]:
        def case(payload: str) -> None:
            path_round_trip(dt, host, {"path": f"{host.scratch('dir-' + key)}/d", key: payload},
                            is_dir(**({key: payload} if key != "mode" else {})))
        return case

    trials.run("directory.path", path)
    trials.run("directory.path (bare)", lambda p: path(p, embed=False))
    trials.run("directory.mode", attr("mode"))
    trials.run("directory.owner", attr("owner"))
    trials.run("directory.group", attr("group"))
    trials.check()


def test_symlink(host: Host) -> None:
    st, trials = SymlinkType(), Trials()

    def points_to(target: str) -> Callable[[str], None]:
        def verify(where: str) -> None:
            fact = host.conn.stat_paths([where])[0]
            assert fact is not None and fact.kind == "symlink" and fact.target == target, fact
            assert os.readlink(host.upper(where)) == target
        return verify

    def path(payload: str, *, embed: bool = True) -> None:
        where = f"{host.scratch('link-path')}/{payload}" if embed else payload
        path_round_trip(st, host, {"path": where, "target": "target"}, points_to("target"))

    def target(payload: str) -> None:
        path_round_trip(st, host, {"path": f"{host.scratch('link-target')}/l",
                                   "target": payload}, points_to(payload))

    trials.run("symlink.path", path)
    trials.run("symlink.path (bare)", lambda p: path(p, embed=False))
    trials.run("symlink.target", target)
    trials.check()


# -- package -----------------------------------------------------------------------------------

def test_package(host: Host) -> None:
    pt, trials = PackageType(), Trials()

    def install(attrs: dict[str, Any]) -> None:
        desired = validated(pt, attrs)
        change = plan(pt, host.conn, desired)
        assert change.action is Action.CREATE
        state = apply(pt, host.conn, change)
        raise AssertionError(f"installed {attrs}: {state}")  # no payload names a real package

    trials.run("package.name", lambda p: install({"name": p}), workers=1)
    trials.run("package.version", lambda p: install({"name": "tree", "version": p}), workers=1)
    installed = host.sh("dpkg-query -W -f '${Package}\\n'").splitlines()
    assert b"tree" not in installed
    trials.check()


# -- user, group -------------------------------------------------------------------------------

def entry(host: Host, db: str, name: str) -> list[bytes] | None:
    """NAME's fields in the passwd or group database, as bytes (``getent``)."""
    res = host.conn.run(["getent", db, "--", name], mutating=False)
    if res.returncode == 2:
        return None
    assert res.ok, res
    return res.stdout.rstrip(b"\n").split(b":")


def test_user(host: Host) -> None:
    ut, trials = UserType(), Trials()
    run = trials.run

    def account(attrs: dict[str, Any], index: int | None = None) -> None:
        """Create the user (no home), check field INDEX of its passwd entry is the payload's
        bytes, plan again (no-op), delete it."""
        name = attrs["name"]
        attrs = {**attrs, "create_home": False}
        validated(ut, attrs)
        try:
            desired, state = create(ut, host, attrs)
            fields = entry(host, "passwd", name)
            assert fields is not None and fields[0] == raw(name), fields
            if index is not None:
                key = ("name", "", "", "", "comment", "home", "shell")[index]
                assert fields[index] == raw(attrs[key]), fields
            settle(ut, host, desired, state)
            delete(ut, host, state)
            assert entry(host, "passwd", name) is None
        except BaseException:
            host.conn.run(["userdel", "--", name])  # whatever was left
            raise

    run("user.name", lambda p: account({"name": p}, 0))
    run("user.home", lambda p: account(
        {"name": host.fresh_name(), "home": f"{host.scratch('home')}/{p}"}, 5))
    run("user.home (bare)", lambda p: account({"name": host.fresh_name(), "home": p}, 5))
    run("user.shell", lambda p: account(
        {"name": host.fresh_name(), "shell": f"{host.scratch('shell')}/{p}"}, 6))
    run("user.shell (bare)", lambda p: account({"name": host.fresh_name(), "shell": p}, 6))
    run("user.comment", lambda p: account({"name": host.fresh_name(), "comment": p}, 4))
    run("user.group", lambda p: account({"name": host.fresh_name(), "group": p}))
    run("user.groups", lambda p: account({"name": host.fresh_name(), "groups": [p]}))
    trials.check()


def test_group(host: Host) -> None:
    gt, trials = GroupType(), Trials()

    def group(payload: str) -> None:
        validated(gt, {"name": payload})
        try:
            desired, state = create(gt, host, {"name": payload})
            fields = entry(host, "group", payload)
            assert fields is not None and fields[0] == raw(payload), fields
            settle(gt, host, desired, state)
            delete(gt, host, state)
            assert entry(host, "group", payload) is None
        except BaseException:
            host.conn.run(["groupdel", "--", payload])  # whatever was left
            raise

    trials.run("group.name", group, workers=1)
    trials.check()


# -- service -----------------------------------------------------------------------------------

def start_service(host: Host, name: str) -> None:
    svc = ServiceType()
    desired = validated(svc, {"name": name, "running": True})
    change = plan(svc, host.conn, desired)
    assert change.action is Action.CREATE  # no such service on the host
    apply(svc, host.conn, change)
    raise AssertionError(f"started a service named {name!r}")


def test_service(host: Host) -> None:
    trials = Trials()
    trials.run("service.name", lambda p: start_service(host, p))
    trials.check()


def test_service_name_longer_than_any_service_is_rejected(host: Host) -> None:
    with pytest.raises(Rejected) as info:
        start_service(host, PAYLOAD["long-100000"])
    assert info.value.stage == "schema", info.value


# -- command -----------------------------------------------------------------------------------

#: writes its first argument ($1) to the file named by $0, byte for byte
WRITE_ARG = 'printf %s "$1" > "$0"'


def test_command(host: Host) -> None:
    ct, trials = CommandType(), Trials()

    def run(attrs: dict[str, Any], mkdir: str | None = None) -> None:
        """Validate, make MKDIR, run once, plan again (no-op), forget."""
        validated(ct, attrs)
        if mkdir is not None:
            host.mkdir_p(mkdir)
        desired, state = create(ct, host, attrs)
        assert state["exit_code"] == 0, state
        settle(ct, host, desired, state)
        delete(ct, host, state)

    def argv_item(payload: str) -> None:
        out = f"{host.scratch('argv')}/out"
        run({"command": ["/bin/sh", "-c", WRITE_ARG, out, payload]}, os.path.dirname(out))
        assert host.upper(out).read_bytes() == raw(payload)

    def program(payload: str) -> None:
        run({"command": [payload]})

    def creates(payload: str, *, embed: bool = True) -> None:
        where = f"{host.scratch('creates')}/{payload}" if embed else payload
        host.declared.add(where)
        run({"command": ["/bin/sh", "-c", 'mkdir -p -- "$0" && { [ -e "$1" ] || : > "$1"; }',
                         os.path.dirname(where), where], "creates": where})
        assert os.path.lexists(host.upper(where))

    def unless(payload: str) -> None:
        out = f"{host.scratch('unless')}/out"
        attrs = {"command": ["false"], "unless": ["/bin/sh", "-c", WRITE_ARG, out, payload]}
        desired = validated(ct, attrs)
        host.mkdir_p(os.path.dirname(out))
        change = plan(ct, host.conn, desired)
        assert change.action is Action.NOOP, change  # unless exited 0: false never runs
        assert host.upper(out).read_bytes() == raw(payload)

    def cwd(payload: str, *, embed: bool = True) -> None:
        where = f"{host.scratch('cwd')}/{payload}" if embed else payload
        host.declared.add(f"{where}/cwd-probe")
        run({"command": ["touch", "--", "cwd-probe"], "cwd": where}, where)
        assert (host.upper(where) / "cwd-probe").is_file()

    def environment(key: str, value: str) -> None:
        out = f"{host.scratch('env')}/out"
        run({"command": ["/bin/sh", "-c", 'exec /usr/bin/env -0 > "$0"', out],
             "environment": {key: value}}, os.path.dirname(out))
        assert raw(f"{key}={value}") in host.upper(out).read_bytes().split(b"\0")

    trials.run("command.command[i]", argv_item)
    trials.run("command.command[0]", program)
    trials.run("command.creates", creates)
    trials.run("command.creates (bare)", lambda p: creates(p, embed=False))
    trials.run("command.unless[i]", unless)
    trials.run("command.cwd", cwd)
    trials.run("command.cwd (bare)", lambda p: cwd(p, embed=False))
    trials.run("command.environment key", lambda p: environment(p, "v"))
    trials.run("command.environment value", lambda p: environment("TECTUM_INJ", p))
    trials.check()


def test_literal_token_text_in_content_is_plain_text(host: Host) -> None:
    ft = FileType()
    body = 'echo "${tectum:-default}" ${tectum:x}\n'
    where = f"{host.scratch('token')}/f"
    host.mkdir_p(os.path.dirname(where))
    desired, state = create(ft, host, {"path": where, "content": body})
    is_file(host, body)(where)
    try:
        settle(ft, host, desired, state)
    finally:
        delete(ft, host, state)


# -- no marker anywhere ------------------------------------------------------------------------

FIND = (r"find / \( -path /proc -o -path /sys {prune} \) -prune -o -name '" + MARKER + "*' "
        r"-print0")


def test_no_marker_files_on_the_host_or_this_machine(host: Host) -> None:
    """Last: nothing ran. Under ROOT a ``tectum-pwned-*`` name may only be part of a path a
    test declared (a payload's text used as a file name); elsewhere none may exist."""
    found = host.sh(FIND.format(prune=""))
    hits = [os.fsdecode(p) for p in found.split(b"\0") if p]
    declared = {os.path.normpath(p) for p in host.declared}
    stray = [h for h in hits if not (h.startswith(ROOT + "/") and any(
        d == h or d.startswith(h + "/") for d in declared))]
    assert stray == [], stray
    local = subprocess.run(["sh", "-c", FIND.format(prune="-o -path '/tmp/tectum-fleet-*'")],
                           capture_output=True, check=False)
    assert [os.fsdecode(p) for p in local.stdout.split(b"\0") if p] == []
    print(outcome_table())


def outcome_table() -> str:
    lines = ["", f"{len(CORPUS)} payloads; per attribute: exact / rejected (where)"]
    for attr, table in OUTCOMES.items():
        exact = sum(o.kind == "exact" for o in table.values())
        stages: dict[str, int] = {}
        for o in table.values():
            if o.kind == "rejected":
                stages[o.stage] = stages.get(o.stage, 0) + 1
        where = ", ".join(f"{k} {v}" for k, v in sorted(stages.items()))
        lines.append(f"  {attr:28} exact {exact:3}  rejected {sum(stages.values()):3}"
                     + (f" ({where})" if where else ""))
    return "\n".join(lines)
