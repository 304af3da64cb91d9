"""Evaluate ``stack.py`` into declarations, without side effects.

The stack is plain Python, run with the project directory first on ``sys.path`` (so a stack can
import its own roles and modules). Errors in it become diagnostics that point at the user's own
file and line: a syntax error, an exception raised while evaluating, a bad declaration.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping

from tectum.config.declaration import Stack, VarInput
from tectum.config.facts import FactsNeeded, FactsSource, FactsUnknown
from tectum.config.inventory import Inventory
from tectum.config.project import Project
from tectum.diagnostics import Diagnostic, DiagnosticError, SourceLocation


def evaluate(project: Project, inputs: Mapping[str, VarInput],
             inventory: Inventory | None = None, facts: FactsSource | None = None) -> Stack:
    """Run the project's stack file; returns the :class:`Stack` with its diagnostics (errors
    included: callers check ``stack.diagnostics.has_errors``). Roles in it see ``inventory``
    and the hosts' ``facts`` (None: unknown, as ``validate`` has them). When the stack asks for
    facts ``facts`` has not gathered, ``stack.facts_needed`` names the hosts: gather them and
    evaluate again."""
    path = project.stack_file
    stack = Stack(project.root, inputs, inventory, facts)
    try:
        with open(path, encoding="utf-8") as fh:
            source = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        stack.diagnostics.append(Diagnostic.error(
            "Cannot read stack", f"{path}: {exc}.", source=SourceLocation(path)))
        return stack
    try:
        code = compile(source, path, "exec")
    except SyntaxError as exc:
        stack.diagnostics.append(Diagnostic.error(
            "Syntax error in stack",
            f"{exc.msg}" + (f": {exc.text.strip()}" if exc.text else "")
            + ". Fix the line and run the command again.",
            source=SourceLocation(exc.filename or path, exc.lineno or 0),
        ))
        return stack
    namespace: dict[str, object] = {"__name__": "__tectum_stack__", "__file__": path}
    sys.path.insert(0, project.root)
    before = set(sys.modules)
    try:
        with stack:
            exec(code, namespace)
            stack.finish()
    except DiagnosticError as exc:
        stack.diagnostics.extend(exc.diagnostics)
    except (FactsNeeded, FactsUnknown) as exc:
        stack.facts_pending(exc, "The stack")
    except Exception as exc:  # noqa: BLE001 - any error in user code becomes a diagnostic
        stack.diagnostics.append(_user_error(exc, project.root, path))
    finally:
        try:
            sys.path.remove(project.root)
        except ValueError:
            pass
        # forget the project's own modules so a second evaluation re-reads them
        for name in set(sys.modules) - before:
            mod_file = getattr(sys.modules[name], "__file__", None) or ""
            if mod_file.startswith(project.root + os.sep):
                del sys.modules[name]
    return stack


def _user_error(exc: BaseException, root: str, path: str) -> Diagnostic:
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    user = [f for f in frames if f.filename.startswith(root + os.sep) or f.filename == path]
    where = user[-1] if user else (frames[-1] if frames else None)
    source = SourceLocation(where.filename, where.lineno or 0) if where else SourceLocation(path)
    unknown = _unknown_type(exc)
    if unknown is not None:
        import tectum.host

        return Diagnostic.error(
            "Unknown resource type",
            f"tectum.host has no resource type {unknown!r}. Resource types: "
            f"{', '.join(tectum.host.__all__)}.",
            source=source,
        )
    line = f" (in: {where.line.strip()})" if where and where.line else ""
    message = str(exc).rstrip(".")
    return Diagnostic.error(
        "Error evaluating stack",
        f"{type(exc).__name__}: {message}{line}. Fix the stack and run the command again.",
        source=source,
    )


def _unknown_type(exc: BaseException) -> str | None:
    """The name in ``from tectum.host import Nope`` / ``tectum.host.Nope``, else None."""
    if isinstance(exc, ImportError) and exc.name == "tectum.host":
        m = re.search(r"cannot import name '([^']+)'", str(exc))
        return m[1] if m else None
    if isinstance(exc, AttributeError) and getattr(exc, "obj", None) is not None:
        import tectum.host

        if exc.obj is tectum.host:
            return str(exc.name)
    return None
