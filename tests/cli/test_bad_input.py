"""Bad input never crashes tectum and never costs what was already applied.

Every case runs the real CLI on a project under ``tmp_path`` (only ``File``/``Directory``
resources on paths under ``tmp_path``) and checks that:

* the exit code is 1 and there is no Python traceback (nor an "Internal error");
* a diagnostic with the expected summary is printed, with the resource address and the
  ``stack.py:<line>`` source location where one applies, saying what is wrong and what to do;
* state and the objects already applied are untouched: ``state list`` still lists them and, once
  the input is fixed, ``plan --detailed-exitcode`` finds nothing to do.
"""

from __future__ import annotations

import shutil
import sqlite3
import textwrap
from collections.abc import Callable, Iterable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import Result

Run = Callable[..., Result]


# -- reading diagnostics ---------------------------------------------------------------------

@dataclass
class Diag:
    """One rendered diagnostic (``View.diagnostic``)::

        Error: SUMMARY
          at FILE:LINE, in ADDRESS
          DETAIL...
    """

    severity: str
    summary: str
    source: str | None = None
    address: str | None = None
    detail_lines: list[str] = field(default_factory=list)

    @property
    def detail(self) -> str:
        return "\n".join(self.detail_lines)


def parse_diagnostics(output: str) -> list[Diag]:
    diags: list[Diag] = []
    current: Diag | None = None
    for line in output.splitlines():
        for severity in ("Error", "Warning"):
            if line.startswith(f"{severity}: "):
                current = Diag(severity, line[len(severity) + 2:].strip())
                diags.append(current)
                break
        else:
            if current is None:
                continue
            if not line.startswith("  "):
                current = None
                continue
            text = line[2:]
            if not current.detail_lines and current.source is None \
                    and current.address is None and text.startswith(("at ", "in ")):
                for part in text.split(", "):
                    if part.startswith("at "):
                        current.source = part[3:]
                    elif part.startswith("in "):
                        current.address = part[3:]
                continue
            current.detail_lines.append(text)
    return diags


def expect_error(
    result: Result,
    summary: str,
    *,
    source: str | Path | None = None,
    address: str | None = None,
    detail: Iterable[str] = (),
    absent: Iterable[str] = (),
) -> Diag:
    """Assert ``result`` failed with exit code 1 and an ``Error: SUMMARY`` diagnostic carrying
    ``source`` (exactly, e.g. ``/…/stack.py:3``), ``address`` and every ``detail`` fragment;
    nothing in ``absent`` may appear anywhere in the output. Returns that diagnostic."""
    out = result.output
    assert result.returncode == 1, f"exit code {result.returncode}, want 1:\n{out}"
    assert "Traceback" not in out, out
    assert "Internal error" not in out, out
    errors = [d for d in parse_diagnostics(out) if d.severity == "Error"]
    matching = [d for d in errors if d.summary == summary]
    assert matching, (f"no 'Error: {summary}' diagnostic; got "
                      f"{[d.summary for d in errors]}:\n{out}")
    diag = matching[0]
    if source is not None:
        assert diag.source == str(source), f"source {diag.source!r}, want {str(source)!r}:\n{out}"
    if address is not None:
        assert diag.address == address, f"address {diag.address!r}, want {address!r}:\n{out}"
    for fragment in detail:
        assert fragment in diag.detail, f"{fragment!r} not in the detail:\n{out}"
    for fragment in absent:
        assert fragment not in out, f"{fragment!r} should not be in the output:\n{out}"
    return diag


# -- projects ----------------------------------------------------------------------------------

def write_stack(root: Path, text: str, out: Path) -> str:
    """Write ``stack.py`` (dedented, ``@OUT@`` → ``out``); returns the text written."""
    body = textwrap.dedent(text).replace("@OUT@", str(out))
    (root / "stack.py").write_text(body)
    return body


def line_of(text: str, needle: str) -> int:
    """The 1-based line of the only line of ``text`` containing ``needle``."""
    hits = [n for n, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(hits) == 1, f"{needle!r} is on lines {hits}"
    return hits[0]


GOOD = """\
from tectum.host import Directory, File

www = Directory("www", path="@OUT@/www")
index = File("index", path=f"{www.path}/index.html", content="hello\\n")
"""
GOOD_ADDRESSES = ["directory.www", "file.index"]


@dataclass
class Project:
    root: Path
    out: Path
    tectum: Run

    @property
    def stack_file(self) -> str:
        return str(self.root / "stack.py")

    @property
    def state_file(self) -> Path:
        return self.root / ".tectum" / "state.db"

    def write(self, text: str) -> str:
        return write_stack(self.root, text, self.out)

    def at(self, text: str, needle: str) -> str:
        """``/…/stack.py:LINE`` of the line of ``text`` holding ``needle``."""
        return f"{self.stack_file}:{line_of(text, needle)}"

    def run(self, *args: str) -> Result:
        return self.tectum(*args, cwd=self.root)

    def state_list(self) -> list[str]:
        result = self.run("state", "list")
        assert result.returncode == 0, result.output
        return result.stdout.split()

    def assert_nothing_lost(self) -> None:
        """What the good stack applied is still in state and on disk, and with the good stack
        back in place there is nothing to do."""
        assert self.state_list() == GOOD_ADDRESSES
        assert (self.out / "www" / "index.html").read_text() == "hello\n"
        self.write(GOOD)
        result = self.run("plan", "--detailed-exitcode")
        assert result.returncode == 0, result.output
        assert "No changes." in result.stdout


@pytest.fixture
def project(tmp_path: Path, tectum: Run) -> Project:
    """A project directory (nothing applied yet) whose resources live under ``tmp_path/out``."""
    root = tmp_path / "proj"
    root.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    proj = Project(root, out, tectum)
    proj.write(GOOD)
    return proj


@pytest.fixture
def applied(project: Project) -> Project:
    """The project with the good stack applied (``directory.www`` and ``file.index``)."""
    result = project.run("apply", "--auto-approve")
    assert result.returncode == 0, result.output
    assert "Apply complete! Resources: 2 added" in result.stdout
    return project


# -- errors in stack.py, each also given to an apply over applied state ----------------------------

@dataclass
class Case:
    id: str
    stack: str
    summary: str
    #: a fragment of the line the diagnostic must point at (None: no source line expected)
    line: str | None
    address: str | None
    detail: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()
    files: dict[str, str] = field(default_factory=dict)


CASES = [
    Case(
        "syntax-error",
        GOOD + 'broken = File("broken", path="@OUT@/b", content="x"\n',
        "Syntax error in stack", 'File("broken"', None,
        detail=("'(' was never closed", "Fix the line"),
    ),
    Case(
        "runtime-error",
        GOOD + "ratio = 1 / 0\n",
        "Error evaluating stack", "ratio = 1 / 0", None,
        detail=("ZeroDivisionError: division by zero", "Fix the stack"),
    ),
    Case(
        # `from tectum.host import Nope`: the Python form of an unknown resource type
        "unknown-type-import",
        GOOD.replace("import Directory, File", "import Directory, File, Nope"),
        "Unknown resource type", "import Directory, File, Nope", None,
        # names the bad type and lists the ones there are (Symlink is not on the line itself)
        detail=("Nope", "Symlink"),
    ),
    Case(
        "unknown-type-attribute",
        GOOD + 'import tectum.host\ntectum.host.Nope("n", path="@OUT@/n")\n',
        "Unknown resource type", "tectum.host.Nope(", None,
        detail=("Nope", "Symlink"),
    ),
    Case(
        "unknown-attribute",
        GOOD + 'File("extra", path="@OUT@/extra", content="x", colour="red")\n',
        "Unsupported argument", 'File("extra"', "file.extra",
        detail=("'colour' is not an argument", "Arguments of file: content,"),
    ),
    Case(
        "wrong-type",
        GOOD + 'import tectum.host\ntectum.host.File("x", path="@OUT@/x", content=1)\n',
        "Invalid attribute value", 'tectum.host.File("x"', "file.x",
        detail=("'content'", "expected string, got integer 1"),
        # content *was* set: no follow-on error claiming it was not
        absent=("Set content (the file's text) or template",),
    ),
    Case(
        "reference-to-missing-attribute",
        GOOD + 'File("extra", path=f"{www.nope}/extra", content="x")\n',
        "Error evaluating stack", 'File("extra"', None,
        detail=("directory.www has no attribute 'nope'", "attributes of directory:"),
    ),
    Case(
        "reference-to-undeclared-resource",
        GOOD + "from tectum.values import Ref\n"
        'File("extra", path="@OUT@/extra", content=Ref("file.missing", "path"))\n',
        "Reference to undeclared resource", 'File("extra"', "file.extra",
        detail=("no resource file.missing is declared", "Declare it, or fix the name"),
    ),
    Case(
        "self-reference",
        GOOD + "from tectum.values import Ref\n"
        'File("me", path="@OUT@/me", content=Ref("file.me", "path"))\n',
        "Self-reference", 'File("me"', "file.me",
        detail=("file.me refers to itself",),
    ),
    Case(
        "same-path-twice",
        GOOD + 'Directory("again", path="@OUT@/www")\n',
        "Object managed twice", 'Directory("again"', "directory.again",
        detail=("directory.www (declared at", "both manage", "remove or merge one of them"),
    ),
    Case(
        # index.html's path is only known once www.path is resolved: the claim must still clash
        "same-path-twice-through-reference",
        GOOD + 'File("again", path="@OUT@/www/index.html", content="other\\n")\n',
        "Object managed twice", 'File("again"', "file.again",
        detail=("file.index (declared at", "both manage", "remove or merge one of them"),
    ),
    Case(
        "duplicate-resource",
        GOOD + 'File("index", path="@OUT@/other.html", content="x")\n',
        "Duplicate resource", "other.html", "file.index",
        detail=("file.index is declared twice", "Give each resource its own name"),
    ),
    Case(
        "missing-template",
        GOOD + 'File("t", path="@OUT@/t", template="templates/missing.j2")\n',
        "Invalid resource configuration", 'File("t"', "file.t",
        # what to do: template paths are relative to the stack's directory
        detail=("templates/missing.j2 does not exist", "relative to"),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_stack_error_keeps_applied_state(applied: Project, case: Case) -> None:
    for rel, text in case.files.items():
        (applied.root / rel).parent.mkdir(parents=True, exist_ok=True)
        (applied.root / rel).write_text(text)
    text = applied.write(case.stack)
    where = applied.at(text, case.line) if case.line else None
    result = applied.run("apply", "--auto-approve")
    expect_error(result, case.summary, source=where, address=case.address,
                 detail=case.detail, absent=case.absent)
    assert "Apply complete" not in result.output
    applied.assert_nothing_lost()


def test_runtime_error_in_imported_module_points_at_that_module(project: Project) -> None:
    roles = project.root / "roles"
    roles.mkdir()
    (roles / "__init__.py").write_text("")
    (roles / "web.py").write_text(textwrap.dedent("""\
        from tectum.host import File


        def site(path):
            return File("site", path=path, content=undefined_name)
    """))
    project.write('from roles.web import site\nsite("@OUT@/site")\n')
    expect_error(project.run("plan"), "Error evaluating stack",
                 source=f"{roles / 'web.py'}:5",
                 detail=("NameError: name 'undefined_name' is not defined",))


def test_dependency_cycle_names_every_resource_in_the_loop(applied: Project) -> None:
    text = applied.write(GOOD + textwrap.dedent("""\
        from tectum.values import Ref

        a = File("a", path="@OUT@/a", content=Ref("file.c", "path"))
        b = File("b", path="@OUT@/b", content=a.path)
        c = File("c", path="@OUT@/c", content=b.path)
        outside = File("outside", path="@OUT@/outside", content=a.path)
    """))
    for args in (("validate",), ("plan",), ("apply", "--auto-approve")):
        result = applied.run(*args)
        diag = expect_error(result, "Dependency cycle",
                            detail=("file.a → file.c → file.b → file.a",
                                    "Break the loop by removing one of the references"))
        assert diag.address in ("file.a", "file.b", "file.c")
        assert diag.source == applied.at(text, f'File("{diag.address[5:]}"')
        for name in ("a", "b", "c"):
            where = applied.at(text, f'File("{name}"')
            assert f"file.{name} at {where}" in diag.detail
        assert "file.outside" not in diag.detail, "not part of the loop"
        assert len([d for d in parse_diagnostics(result.output)
                    if d.summary == "Dependency cycle"]) == 1
    applied.assert_nothing_lost()


def test_file_and_directory_on_the_same_path(project: Project) -> None:
    text = project.write(GOOD + 'File("clash", path="@OUT@/www", content="x")\n')
    www_at = project.at(text, 'Directory("www"')
    expect_error(project.run("plan"), "Object managed twice",
                 source=project.at(text, 'File("clash"'), address="file.clash",
                 detail=(f"directory.www (declared at {www_at})", f"{project.out}/www"))


# -- declarations checked without applied state --------------------------------------------------

DECL_CASES = [
    Case(
        "invalid-resource-name",
        'from tectum.host import File\nFile("bad name", path="@OUT@/f", content="x")\n',
        "Invalid resource name", 'File("bad name"', None,
        detail=("'bad name' cannot name a file resource", 'File("my_name", path=...)'),
    ),
    Case(
        "missing-required-argument",
        'from tectum.host import File\nFile("f", content="x")\n',
        "Missing required argument", 'File("f"', "file.f",
        detail=("The argument 'path' is required by file resources",),
    ),
    Case(
        "content-and-template",
        'from tectum.host import File\n'
        'File("f", path="@OUT@/f", content="x", template="templates/t.j2")\n',
        "Invalid resource configuration", 'File("f"', "file.f",
        detail=("Set either content or template, not both.",),
        files={"templates/t.j2": "t\n"},
    ),
    Case(
        "neither-content-nor-template",
        'from tectum.host import File\nFile("f", path="@OUT@/f")\n',
        "Invalid resource configuration", 'File("f"', "file.f",
        detail=("Set content (the file's text) or template (a Jinja2 file).",),
    ),
    Case(
        "bad-file-mode",
        'from tectum.host import File\nFile("f", path="@OUT@/f", content="x", mode="0999")\n',
        "Invalid attribute value", 'File("f"', "file.f",
        detail=("Attribute 'mode': must be an octal mode written as a string, such as \"0644\"",),
    ),
    Case(
        "relative-path",
        'from tectum.host import File\nFile("f", path="relative/f", content="x")\n',
        "Invalid attribute value", 'File("f"', "file.f",
        detail=("Attribute 'path': must be an absolute path (starting with /)",),
    ),
    Case(
        "relative-path-from-variable",
        'from tectum import var\nfrom tectum.host import Directory\n'
        'Directory("d", path=var("where", default="somewhere"))\n',
        "Invalid attribute value", 'Directory("d"', "directory.d",
        detail=("Attribute 'path': must be an absolute path",),
    ),
    Case(
        # only known at plan time, once the reference is resolved
        "relative-path-from-reference",
        'from tectum.host import Directory, File\n'
        'd = Directory("d", path="@OUT@/d", mode="0755")\n'
        'File("f", path=f"{d.mode}/f", content="x")\n',
        "Invalid attribute value", 'File("f"', "file.f",
        detail=("Attribute 'path': must be an absolute path",),
    ),
    Case(
        "template-syntax-error",
        'from tectum.host import File\nFile("f", path="@OUT@/f", template="templates/bad.j2")\n',
        "Invalid resource configuration", 'File("f"', "file.f",
        detail=("templates/bad.j2:2: template syntax error", "Unexpected end of template"),
        files={"templates/bad.j2": "line one\n{% if x %}\nhello\n"},
    ),
    Case(
        "template-undefined-variable",
        'from tectum.host import File\n'
        'File("f", path="@OUT@/f", template="templates/undef.j2", vars={"host": "h"})\n',
        "Invalid resource configuration", 'File("f"', "file.f",
        # the template's own line, the name, and what to do: pass it in vars
        detail=("templates/undef.j2:2", "'port' is undefined", "vars"),
        files={"templates/undef.j2": "host={{ host }}\nport={{ port }}\n"},
    ),
]


@pytest.mark.parametrize("case", DECL_CASES, ids=[c.id for c in DECL_CASES])
def test_declaration_error(project: Project, case: Case) -> None:
    for rel, text in case.files.items():
        (project.root / rel).parent.mkdir(parents=True, exist_ok=True)
        (project.root / rel).write_text(text)
    text = project.write(case.stack)
    diag = expect_error(project.run("plan"), case.summary,
                        source=project.at(text, case.line) if case.line else None,
                        address=case.address, detail=case.detail, absent=case.absent)
    assert not diag.detail.endswith(".."), f"doubled full stop: {diag.detail!r}"
    assert not any(project.out.iterdir()), "nothing may be created"


def test_validate_reports_a_missing_template(project: Project) -> None:
    """`validate` must not call a stack valid when its template file does not exist."""
    text = project.write('from tectum.host import File\n'
                         'File("t", path="@OUT@/t", template="templates/missing.j2")\n')
    result = project.run("validate")
    assert "Success!" not in result.output
    expect_error(result, "Invalid resource configuration",
                 source=project.at(text, 'File("t"'), address="file.t",
                 detail=("templates/missing.j2 does not exist",))


# -- variables ---------------------------------------------------------------------------------

VAR_STACK = """\
from tectum import var
from tectum.host import File

port = var("port", int, default=8080)
File("conf", path="@OUT@/conf", content=f"port={port}\\n")
"""


def test_wrong_var_type(project: Project) -> None:
    text = project.write(VAR_STACK)
    expect_error(project.run("plan", "-var", "port=abc"), "Invalid value for variable",
                 source=project.at(text, 'var("port"'),
                 detail=("Variable 'port' from -var port=...", "expected an integer, got 'abc'"),
                 # Python's own int() message is not for users
                 absent=("invalid literal for int()",))


def test_missing_required_variable(project: Project) -> None:
    text = project.write(VAR_STACK.replace(", default=8080", ""))
    expect_error(project.run("plan"), "No value for required variable",
                 source=project.at(text, 'var("port"'),
                 detail=("Variable 'port' has no default", "-var port=VALUE",
                         "[vars]", "TECTUM_VAR_port"))


def test_undeclared_var(project: Project) -> None:
    project.write(VAR_STACK)
    expect_error(project.run("plan", "-var", "nope=1"), "Value for undeclared variable",
                 detail=("'nope'", "declares no such variable", "var('nope', ...)"))


def test_malformed_var_option(project: Project) -> None:
    project.write(VAR_STACK)
    expect_error(project.run("plan", "-var", "port"), "Invalid -var option",
                 detail=("-var 'port' is not of the form NAME=VALUE", "-var port=8080"))


def test_bad_variable_keeps_applied_state(applied: Project) -> None:
    applied.write(GOOD + 'from tectum import var\nvar("count", int)\n')
    for args in (("apply", "--auto-approve"), ("apply", "--auto-approve", "-var", "count=x")):
        result = applied.run(*args)
        assert result.returncode == 1, result.output
        assert "Traceback" not in result.output
    applied.assert_nothing_lost()


# -- the project: tectum.toml, stack.py, the directory -------------------------------------------

def test_invalid_tectum_toml(applied: Project) -> None:
    toml = applied.root / "tectum.toml"
    toml.write_text('[project]\nname = "web"\n[vars\nport = 1\n')
    for args in (("plan",), ("apply", "--auto-approve"), ("state", "list")):
        expect_error(applied.run(*args), "Invalid project file", source=f"{toml}:3",
                     detail=(f"{toml} is not valid TOML", "Fix the file"))
    toml.unlink()
    applied.assert_nothing_lost()


def test_tectum_toml_section_not_a_table(project: Project) -> None:
    toml = project.root / "tectum.toml"
    toml.write_text("vars = 3\n")
    diag = expect_error(project.run("plan"), "Invalid project file",
                        detail=("[vars]", "must be a table"))
    assert diag.source is not None and diag.source.startswith(str(toml))


BINARY = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe\x80"


def test_binary_tectum_toml(applied: Project) -> None:
    """Issue 10 item 9: a file that is not UTF-8 text is an invalid project file (with its path
    and the place of the first bad byte), not "Internal error — UnicodeDecodeError"."""
    toml = applied.root / "tectum.toml"
    toml.write_bytes(BINARY)
    for args in (("plan",), ("apply", "--auto-approve"), ("validate",), ("state", "list")):
        expect_error(applied.run(*args), "Invalid project file", source=f"{toml}:1",
                     detail=(f"{toml} is not valid TOML: it is not UTF-8 text",
                             "byte 0x89 at line 1, column 1", "Fix the file"))
    assert toml.read_bytes() == BINARY
    toml.unlink()
    applied.assert_nothing_lost()


def test_binary_var_file(applied: Project) -> None:
    applied.write(VAR_STACK)
    var_file = applied.root.parent / "prod.tfvars"
    var_file.write_bytes(b'port = 80\nname = "caf\xe9"\n')
    for args in (("plan", "-var-file", str(var_file)),
                 ("apply", "--auto-approve", "-var-file", str(var_file))):
        expect_error(applied.run(*args), "Invalid variables file", source=f"{var_file}:2",
                     detail=(f"{var_file} is not valid TOML: it is not UTF-8 text",
                             "byte 0xe9 at line 2, column 12"))
    assert not (applied.out / "conf").exists(), "nothing is applied with a bad -var-file"
    applied.write(GOOD)
    applied.assert_nothing_lost()


def test_binary_inventory(applied: Project) -> None:
    inventory = applied.root / "inventory.toml"
    inventory.write_bytes(BINARY)
    for args in (("plan",), ("apply", "--auto-approve"), ("validate",)):
        expect_error(applied.run(*args), "Invalid inventory", source=f"{inventory}:1",
                     detail=(f"{inventory} is not valid TOML: it is not UTF-8 text",))
    inventory.unlink()
    applied.assert_nothing_lost()


def test_missing_stack_file(tmp_path: Path, tectum: Run) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    for args in (("plan", str(empty)), ("apply", "--auto-approve", str(empty)),
                 ("validate", str(empty))):
        expect_error(tectum(*args, cwd=tmp_path), "No stack found",
                     detail=(f"{empty} has no stack.py", "pass the directory"))
    expect_error(tectum("plan", cwd=empty), "No stack found")


def test_nonexistent_directory(tmp_path: Path, tectum: Run) -> None:
    missing = tmp_path / "no-such-dir"
    for args in (("plan", str(missing)), ("apply", "--auto-approve", str(missing)),
                 ("state", "list", str(missing))):
        expect_error(tectum(*args, cwd=tmp_path), "No such directory",
                     detail=(f"{missing} is not a directory",
                             "Give the directory that holds stack.py"))
    assert not missing.exists()


# -- state -------------------------------------------------------------------------------------

def test_state_show_unknown_address(applied: Project) -> None:
    expect_error(applied.run("state", "show", "file.nope"), "No such resource in state",
                 address="file.nope", detail=("file.nope is not in state", "tectum state list"))


def test_state_show_malformed_address(applied: Project) -> None:
    expect_error(applied.run("state", "show", "not an address"), "Invalid address",
                 detail=("is not a resource address", "expected TYPE.NAME"))


def _drop_sidecars(db: Path) -> None:
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


def test_garbage_state_file(applied: Project) -> None:
    db = applied.state_file
    backup = applied.root / "state.backup"
    shutil.copy(db, backup)
    garbage = b"this is not a database\n" * 200
    db.write_bytes(garbage)
    _drop_sidecars(db)
    # a changed stack: if apply went ahead it would rewrite index.html
    applied.write(GOOD.replace("hello", "changed"))
    for args in (("state", "list"), ("show",), ("plan",), ("apply", "--auto-approve"),
                 ("destroy", "--auto-approve"), ("output",)):
        expect_error(applied.run(*args), "Unreadable state", source=db,
                     detail=(f"The state database {db} cannot be read", "Nothing was changed",
                             "Restore the file from a backup"))
    assert db.read_bytes() == garbage, "tectum must not overwrite a state file it cannot read"
    assert (applied.out / "www" / "index.html").read_text() == "hello\n"
    shutil.copy(backup, db)
    applied.assert_nothing_lost()


def test_state_path_unreadable(applied: Project) -> None:
    db = applied.state_file
    aside = applied.root / "state.aside"
    db.rename(aside)
    _drop_sidecars(db)
    db.mkdir()  # a directory where the state file should be
    for args in (("state", "list"), ("apply", "--auto-approve")):
        expect_error(applied.run(*args), "Unreadable state", source=db,
                     detail=("cannot be read", "Restore the file from a backup"))
    db.rmdir()
    aside.rename(db)
    applied.assert_nothing_lost()


def _foreign_sqlite(db: Path) -> None:
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        conn.execute("INSERT INTO notes (body) VALUES ('not tectum')")


@pytest.mark.parametrize("kind", ["empty", "foreign-sqlite"])
def test_state_file_that_is_not_tectum_state_is_refused(applied: Project, kind: str) -> None:
    """Issue 10 item 8: a zero-byte (or foreign) .tectum/state.db was taken for a new project,
    so the next apply started a new lineage and the history was gone without a word. Every
    command refuses it, says what was found where and what to do, and leaves it as it is."""
    db = applied.state_file
    backup = applied.root / "state.backup"
    shutil.copy(db, backup)
    db.unlink()
    _drop_sidecars(db)
    if kind == "empty":
        db.write_bytes(b"")
        found = "is an empty file (0 bytes)"
    else:
        _foreign_sqlite(db)
        found = "is an SQLite database without tectum's tables (it has notes)"
    before = db.read_bytes()
    applied.write(GOOD.replace("hello", "changed"))  # an apply that went ahead would show
    for args in (("state", "list"), ("plan",), ("apply", "--auto-approve"), ("show",),
                 ("destroy", "--auto-approve"), ("state", "history"), ("output",)):
        expect_error(applied.run(*args), "Not a tectum state database", source=db,
                     detail=(f"The state database {db} {found}, not a tectum state database",
                             "Nothing was changed", "restore the file from a backup",
                             "`tectum state push FILE`", "delete the file"))
    assert db.read_bytes() == before, "the file is left as it was"
    assert not Path(f"{db}-wal").exists() or kind != "empty"
    assert sorted(p.name for p in db.parent.iterdir()
                  if not p.name.startswith("state.db.default.lock")) == \
        sorted(["state.db"] + [p.name for p in db.parent.glob("state.db-*")]), \
        "no other database was made beside it"
    assert (applied.out / "www" / "index.html").read_text() == "hello\n"
    db.unlink()
    _drop_sidecars(db)
    shutil.copy(backup, db)
    applied.assert_nothing_lost()


def test_new_project_still_starts_a_state(project: Project) -> None:
    """The refusal above is for an existing file: without one, apply makes the database."""
    assert not project.state_file.exists()
    result = project.run("apply", "--auto-approve")
    assert result.returncode == 0, result.output
    assert project.state_list() == GOOD_ADDRESSES
    leftovers = [p.name for p in project.state_file.parent.iterdir() if ".new-" in p.name]
    assert leftovers == [], "the temporary database it was made under is gone"


def test_damaged_state_version(applied: Project) -> None:
    applied.write(GOOD + 'File("second", path="@OUT@/second", content="2\\n")\n')
    assert applied.run("apply", "--auto-approve").returncode == 0
    db = applied.state_file
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("UPDATE states SET document = '{\"format_version\": 1, ' "
                     "WHERE serial = 2")
    for args in (("state", "list"), ("apply", "--auto-approve")):
        expect_error(applied.run(*args), "Unreadable state", source=db,
                     detail=("state version 2 is damaged", "Nothing was changed"))
    with closing(sqlite3.connect(db)) as conn, conn:
        serials = [row[0] for row in conn.execute("SELECT serial FROM states ORDER BY serial")]
        conn.execute("DELETE FROM states WHERE serial = 2")  # roll back to version 1
    assert serials == [1, 2], "a failed run must not add a state version"
    assert applied.state_list() == GOOD_ADDRESSES


# -- saved plans ---------------------------------------------------------------------------------

NEXT = GOOD + 'extra = File("extra", path="@OUT@/extra", content="extra\\n")\n'


def _saved_plan(project: Project, name: str = "tfplan") -> Path:
    plan = project.root.parent / name
    result = project.run("plan", "-out", str(plan))
    assert result.returncode == 0, result.output
    return plan


def test_altered_plan_file(applied: Project) -> None:
    applied.write(NEXT)
    plan = _saved_plan(applied)
    plan.write_text(plan.read_text().replace(f"{applied.out}/extra", f"{applied.out}/evil"))
    expect_error(applied.run("apply", str(plan)), "Invalid plan file", source=plan,
                 detail=("was altered after it was written (checksum mismatch)",
                         f"tectum plan -out {plan}"))
    assert not (applied.out / "evil").exists()
    assert not (applied.out / "extra").exists()
    applied.assert_nothing_lost()


@pytest.mark.parametrize("content", [
    pytest.param(b"this is not a plan\n", id="text"),
    pytest.param(b"\x00\xff\xfe garbage \x80", id="binary"),
    pytest.param(b'{"tectum_plan": 1, "checksum": "ab', id="truncated"),
    pytest.param(b'{"tectum_plan": 99, "checksum": "ab", "payload": {}}', id="other-format"),
])
def test_garbage_plan_file(applied: Project, content: bytes) -> None:
    plan = applied.root.parent / "garbage.plan"
    plan.write_bytes(content)
    diag = expect_error(applied.run("apply", str(plan)), "Invalid plan file", source=plan,
                        detail=(str(plan), "tectum plan -out"))
    assert "is not a directory" not in diag.detail
    applied.assert_nothing_lost()


def test_stale_saved_plan_is_refused(applied: Project) -> None:
    applied.write(NEXT)
    plan = _saved_plan(applied)
    # something else is applied after the plan was saved
    applied.write(GOOD + 'other = File("other", path="@OUT@/other", content="o\\n")\n')
    assert applied.run("apply", "--auto-approve").returncode == 0
    result = applied.run("apply", str(plan))
    expect_error(result, "Saved plan is stale",
                 detail=("was made from state serial 1", "now at serial 2",
                         "Make a new plan with `tectum plan -out FILE`"))
    assert not (applied.out / "extra").exists(), "the stale plan must not be applied"
    assert applied.state_list() == ["directory.www", "file.index", "file.other"]


def test_saved_plan_for_another_state_is_refused(applied: Project) -> None:
    applied.write(NEXT)
    plan = _saved_plan(applied)
    # the state is replaced by another one (a new lineage) at the same serial
    shutil.move(applied.root / ".tectum", applied.root.parent / "old-tectum")
    applied.write(GOOD)
    assert applied.run("apply", "--auto-approve").returncode == 0
    expect_error(applied.run("apply", str(plan)), "Saved plan is for another state",
                 detail=("was made for state lineage", "Make a new plan"))
    assert not (applied.out / "extra").exists()
    applied.assert_nothing_lost()
