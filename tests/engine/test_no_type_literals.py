"""The engine and the CLI name no resource type (issue 11, DESIGN decision 9): everything
type-specific is a hook of the type's provider. A literal that is a registered type name or an
attribute of some type's schema, used where code decides by it (compared, looked up in a
mapping, listed in a module-level constant), fails this test. Words the CLI uses for its own
options (``--dir``, ``validate``) are not such uses."""

from __future__ import annotations

import ast
import pathlib

import tectum
from tectum.providers.base import _load
from tectum.providers.registry import registry

SRC = pathlib.Path(tectum.__file__).parent


def _type_words() -> tuple[set[str], set[str]]:
    names: set[str] = set()
    attrs: set[str] = set()
    for cls in registry.providers().values():
        for type_name, target in cls.resource_types.items():
            names.add(type_name)
            rt = _load(target)
            attrs |= set(rt.schema.attrs) | set(rt.stored_computed)
    # transient attributes a read returns for display (``_content``) are type-specific too
    attrs.add("_content")
    return names, attrs


def _decisions(tree: ast.AST) -> list[tuple[int, str]]:
    """String constants used to decide: compared, used as a mapping key or ``.get`` argument,
    or listed in a module-level constant."""
    out: list[tuple[int, str]] = []

    def strings(node: ast.AST) -> list[ast.Constant]:
        return [n for n in ast.walk(node)
                if isinstance(n, ast.Constant) and isinstance(n.value, str)]

    for node in ast.walk(tree):
        found: list[ast.Constant] = []
        if isinstance(node, ast.Compare):
            found = [c for part in (node.left, *node.comparators) for c in strings(part)
                     if not isinstance(part, ast.JoinedStr)]
        elif isinstance(node, ast.Subscript):
            found = strings(node.slice)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in ("get", "pop", "setdefault") and node.args:
            found = strings(node.args[0])
        out.extend((c.lineno, c.value) for c in found)
    if isinstance(tree, ast.Module):
        for stmt in tree.body:
            if isinstance(stmt, ast.Assign | ast.AnnAssign) and stmt.value is not None \
                    and isinstance(stmt.value, ast.Tuple | ast.List | ast.Set):
                out.extend((c.lineno, c.value) for c in strings(stmt.value))
    return out


#: the engine's own vocabulary, which some types also use as attribute names: an output's
#: ``value`` and ``sensitive``, a variable's ``default``, the ``create`` action, an object's
#: origin (``created``, ``found``), a file format's ``format`` field
ENGINE_WORDS = frozenset({"value", "create", "format", "sensitive", "default", "created",
                          "found"})


def test_engine_and_cli_name_no_resource_type() -> None:
    names, attrs = _type_words()
    attrs -= ENGINE_WORDS
    assert {"file", "directory", "package", "path", "content_sha256"} <= names | attrs
    offences = []
    for package in ("engine", "cli"):
        for path in sorted((SRC / package).glob("*.py")):
            for line, value in _decisions(ast.parse(path.read_text())):
                if value in names or value in attrs:
                    offences.append(f"{path.relative_to(SRC)}:{line}: {value!r}")
    assert not offences, "type-specific literals in engine/ or cli/:\n" + "\n".join(offences)


def test_the_check_catches_a_type_literal() -> None:
    """The scanner finds the kinds of use it forbids (so the test above can fail)."""
    code = ('KINDS = ("file", "directory")\n'
            'def f(c, a):\n'
            '    if c.type == "directory":\n'
            '        return a.get("content_sha256"), a["path"]\n')
    found = {v for _, v in _decisions(ast.parse(code))}
    assert found == {"file", "directory", "content_sha256", "path"}
