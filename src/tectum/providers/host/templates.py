"""Jinja2 templates for file content, rendered as Ansible's ``template`` module renders them.

``File(template=..., vars=...)`` renders the template with the same Jinja2 settings and the same
output rules as ansible-core's ``template`` action (2.19), so a role's templates give the same
bytes under tectum as under Ansible (``tests/providers/host/test_templates_ansible.py`` checks
that against ansible-core itself):

* ``trim_blocks=True`` (the newline after a ``{% block %}`` tag is removed),
  ``lstrip_blocks=False``, ``newline_sequence="\\n"``, no autoescaping; a first line
  ``#jinja2: lstrip_blocks: True, trim_blocks: False`` overrides them for that template (any
  of ``trim_blocks``, ``lstrip_blocks``, ``keep_trailing_newline``, ``newline_sequence`` and
  the ``*_start_string``/``*_end_string`` delimiters; the line itself is not output);
* trailing newlines: the output ends with as many newlines as the template file does;
* a template with no ``{{``, ``{%`` or ``{#`` is copied as it is (CRLF line ends included);
* an expression whose value is None outputs nothing (Ansible, not plain Jinja2's ``None``); a
  template that is one expression outputs ``str()`` of its value, without the trailing newline
  (Ansible's "native" result: ``{{ port }}\\n`` with ``port=80`` gives ``80``);
* undefined variables are errors (Ansible's default, ``DEFAULT_UNDEFINED_VAR_BEHAVIOR``), except
  with ``default``/``d``, ``is defined``/``is undefined``; ``a.b.c`` of an undefined ``a`` is
  itself undefined (``a.b is defined`` is false, as in Ansible);
* Ansible's filters and tests (:mod:`tectum.providers.host.templates_filters`) on top of Jinja2's;
* ``{% include %}``/``{% import %}`` find templates next to the template file.

Variables besides ``vars``: ``tectum_managed`` and its alias ``ansible_managed`` (a line to put
in a comment saying tectum manages the file; ``DEFAULT_MANAGED``, or the value given in ``vars``
for either name — Ansible's ``ansible_managed``, whose default is "Ansible managed"),
``template_path`` (the template as the resource names it), ``template_destpath`` (the file
being written, when known). Ansible's ``template_host``, ``template_uid``, ``template_mtime``,
``template_run_date``, ``template_fullpath``, ``now()`` and lookups are deliberately absent:
they would change the file from one run, checkout or machine to the next, which tectum would
report as drift (using one is an error that says so).

Errors are :class:`TemplateError` naming the template file and line, never a traceback.
"""

from __future__ import annotations

import ast
import functools
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from tectum.providers.host.templates_filters import (
    FILTERS,
    PASS_ENVIRONMENT,
    TESTS,
    FilterError,
    b64decode,
    b64encode,
    deferred,
)

__all__ = ["DEFAULT_MANAGED", "TemplateError", "b64decode", "b64encode", "render"]

#: the default text of ``tectum_managed``/``ansible_managed`` (set either in ``vars`` to change it)
DEFAULT_MANAGED = "Managed by tectum"

_CHANGES = ("it would change the file from one run or machine to the next, which tectum would "
            "report as drift. Pass a fixed value in the resource's vars={...} or remove it "
            "from the template")
_LOOKUP = ("lookups read the machine running tectum when the plan is made, not the managed "
           "host. Compute the value in the stack (Python) and pass it in the resource's "
           "vars={...}")

#: Ansible's template variables and functions that tectum does not provide, and why
_ABSENT = {
    "template_host": f"Ansible's template_host (the machine rendering the template): {_CHANGES}",
    "template_uid": f"Ansible's template_uid (the template file's owner): {_CHANGES}",
    "template_fullpath": f"Ansible's template_fullpath (where the project is checked out): "
                         f"{_CHANGES}",
    "template_mtime": f"Ansible's template_mtime (the template's modification time): {_CHANGES}",
    "template_run_date": f"Ansible's template_run_date (the time of the run): {_CHANGES}",
    "now": f"Ansible's now() (the time of the run): {_CHANGES}",
    "lookup": f"Ansible's lookup(): {_LOOKUP}",
    "query": f"Ansible's query(): {_LOOKUP}",
    "q": f"Ansible's q(): {_LOOKUP}",
    "omit": "Ansible's omit (a marker for task arguments; a file has none to leave out). Use "
            "`| default('')` or an `is defined` test",
}

#: the settings a ``#jinja2:`` first line may change (Ansible's ``TemplateOverrides``)
_OVERRIDE_KEYS = frozenset({
    "block_start_string", "block_end_string", "variable_start_string", "variable_end_string",
    "comment_start_string", "comment_end_string", "line_statement_prefix",
    "line_comment_prefix", "trim_blocks", "lstrip_blocks", "newline_sequence",
    "keep_trailing_newline",
})
_HEADER = "#jinja2:"

# keep the old import path of the deferred-value check working
_deferred = deferred


class TemplateError(ValueError):
    """A template is missing or does not render; the message names the file and line."""


def render(path: str, variables: dict[str, Any], *, name: str | None = None,
           dest: str | None = None) -> str:
    """Render the template file at ``path`` with ``variables`` as Ansible's ``template``
    module would (see the module docstring). ``name`` is the template as the configuration
    names it (``template_path``; default ``path``); ``dest`` the path of the file written
    (``template_destpath``). Raises :class:`TemplateError` (file, line, what to do) for a
    missing or unreadable file, a syntax error, an undefined or ``mandatory`` variable, or a
    filter that fails."""
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            source = fh.read()
    except FileNotFoundError:
        raise TemplateError(
            f"template {path} does not exist. Template paths are relative to the directory of "
            "the file that declares the resource; create the template or fix the template "
            "argument"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"cannot read template {path}: {exc}") from None
    return render_text(source, _template_vars(path, variables, name, dest), path)


def _template_vars(path: str, variables: dict[str, Any], name: str | None,
                   dest: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"template_path": name if name is not None else path}
    if dest is not None:
        out["template_destpath"] = dest
    managed = variables.get("tectum_managed", variables.get("ansible_managed", DEFAULT_MANAGED))
    out["tectum_managed"] = out["ansible_managed"] = managed
    out.update(variables)
    return out


def render_text(source: str, variables: dict[str, Any], path: str) -> str:
    """Render template text ``source`` (read from ``path``, which errors name and includes are
    relative to) with exactly ``variables``. Raises :class:`TemplateError`."""
    import jinja2

    settings: dict[str, Any] = {"trim_blocks": True, "lstrip_blocks": False,
                                "newline_sequence": "\n", "keep_trailing_newline": False}
    body = source
    if source.startswith(_HEADER):
        body = _apply_header(source, settings, path)
    starts = (settings.get("block_start_string", "{%"),
              settings.get("variable_start_string", "{{"),
              settings.get("comment_start_string", "{#"))
    if not source.startswith(_HEADER) and not any(s in source for s in starts):
        return source  # not a template: Ansible copies it as it is
    loaded: set[str] = {path}
    try:
        env = _environment(os.path.dirname(os.path.abspath(path)), settings, loaded)
    except (TypeError, ValueError, AssertionError) as exc:
        raise TemplateError(f"{path}:1: invalid {_HEADER} setting: {exc}") from None
    try:
        code = env.compile(body, filename=path)  # the filename gives errors a line
        template = env.template_class.from_code(env, code, env.make_globals(None), None)
        result = template.render(**variables)
        text = "" if result is None else _text(result)
    except jinja2.TemplateSyntaxError as exc:
        where = exc.filename or path
        line = exc.lineno
        if where == path and str(exc.message).startswith("Unexpected end of template"):
            line = _unclosed_line(env, body) or line  # the tag that is never closed
        line += 1 if where == path and body is not source else 0
        raise TemplateError(
            f"{where}:{line}: template syntax error: {str(exc.message).rstrip('.')}"
        ) from None
    except jinja2.TemplateNotFound as exc:
        raise TemplateError(
            f"{path}{_line(exc, loaded, path, body is not source)}: included template "
            f"{exc.name} does not exist (includes are relative to the template's directory)"
        ) from None
    except jinja2.UndefinedError as exc:
        raise TemplateError(
            f"{path}{_line(exc, loaded, path, body is not source)}: "
            f"{_undefined_message(str(exc.message))}"
        ) from None
    except FilterError as exc:
        raise TemplateError(f"{path}{_line(exc, loaded, path, body is not source)}: {exc}"
                            ) from None
    except Exception as exc:  # noqa: BLE001 - errors raised by expressions in the template
        raise TemplateError(f"{path}{_line(exc, loaded, path, body is not source)}: "
                            f"{type(exc).__name__}: {exc}") from None
    if not isinstance(result, str):
        return text  # Ansible writes str() of a one-expression template's value, as it is
    # Ansible renders without keep_trailing_newline, then restores the template's own count of
    # trailing newlines (the whole file's, header line included)
    missing = _trailing_newlines(source) - _trailing_newlines(text)
    if missing > 0:
        text += str(settings["newline_sequence"]) * missing
    return text


_BLOCK_TAGS = frozenset({"if", "for", "block", "macro", "call", "filter", "with", "set",
                         "raw", "autoescape", "trans"})


def _unclosed_line(env: Any, body: str) -> int | None:
    """The line of the innermost block tag (``{% if %}``, ``{% for %}``...) that is never
    closed, or None."""
    stack: list[int] = []
    words: list[tuple[int, str, str]] = []
    try:
        for lineno, kind, value in env.lex(body):
            if kind == "block_begin":
                words = []
            elif kind == "block_end" and words:
                tag = words[0][2]
                if tag.startswith("end") and stack:
                    stack.pop()
                elif tag in _BLOCK_TAGS and not (
                        tag == "set" and any(v == "=" for _, _, v in words)):
                    stack.append(words[0][0])
                words = []
            elif kind not in ("whitespace", "data"):
                words.append((lineno, kind, value))
    except Exception:  # noqa: BLE001 - the lexer failed too: keep Jinja2's line
        return None
    return stack[-1] if stack else None


def _trailing_newlines(text: str) -> int:
    return len(text) - len(text.rstrip("\n"))


def _apply_header(source: str, settings: dict[str, Any], path: str) -> str:
    """Parse the ``#jinja2: key: value, ...`` first line into ``settings``; return the rest."""
    eol = source.find("\n")
    if eol == -1:
        raise TemplateError(f"{path}:1: a {_HEADER} line must end with a newline")
    for pair in source[len(_HEADER):eol].split(","):
        if not pair.strip():
            raise TemplateError(f"{path}:1: empty setting in the {_HEADER} line")
        if ":" not in pair:
            raise TemplateError(f"{path}:1: {_HEADER} setting {pair.strip()!r} has no ':' "
                                "(write key: value)")
        key, value = (p.strip() for p in pair.split(":", 1))
        if key not in _OVERRIDE_KEYS:
            raise TemplateError(f"{path}:1: unknown {_HEADER} setting {key!r} (one of "
                                f"{', '.join(sorted(_OVERRIDE_KEYS))})")
        try:
            settings[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise TemplateError(f"{path}:1: {_HEADER} setting {key}: {value!r} is not a Python "
                                "literal (True, False, a quoted string)") from None
    return source[eol + 1:]


def _environment(directory: str, settings: dict[str, Any], loaded: set[str]) -> Any:
    """A Jinja2 environment with Ansible's output rules, filters and tests."""
    import jinja2
    from jinja2.nativetypes import NativeCodeGenerator

    class Loader(jinja2.FileSystemLoader):
        """Finds included templates next to the template; remembers them for error lines."""

        def get_source(self, environment: jinja2.Environment, template: str
                       ) -> tuple[str, str, Callable[[], bool]]:
            text, filename, uptodate = super().get_source(environment, template)
            if filename:
                loaded.add(filename)
            return text, filename, uptodate

    env_class, undefined, finalize = _classes()
    env = env_class(undefined=undefined, autoescape=False, finalize=finalize,
                    loader=Loader(directory), **settings)
    env.code_generator_class = NativeCodeGenerator
    # no compile-time constant folding: `{{ 42 }}` stays a value, as in Ansible
    env.optimized = False
    env.filters.update(FILTERS)
    for name in PASS_ENVIRONMENT:
        env.filters[name] = jinja2.pass_environment(FILTERS[name])
    env.tests.update(TESTS)
    return env


def _concat(nodes: Any) -> Any:
    """Ansible's output rule: None values output nothing; one value stays itself; several are
    joined as text. Values are made plain first (:func:`_plain`)."""
    values = [n for n in nodes if n is not None]
    if not values:
        return None
    if len(values) == 1:
        return _plain(values[0], top=True)
    return "".join(_text(_plain(v, top=False)) for v in values)


def _text(value: Any) -> str:
    """Text of an output value (bytes are decoded, as Ansible's ``to_text``)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return str(value)


_SCALARS = (str, int, float, bool, bytes, type(None))


def _plain(value: Any, *, top: bool) -> Any:
    """``value`` as Ansible finalises a template result: dicts, lists and tuples (exactly those
    types) become dicts and lists, recursively; the value of a one-expression template (``top``)
    also has any other mapping made a dict and any other iterable a list. Iterators (``map``,
    ``reverse``...) always become lists: Ansible would write ``<generator object at 0x...>``,
    text that changes on every run."""
    import jinja2

    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is dict:
        return {_plain(k, top=top): _plain(v, top=top) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [_plain(v, top=top) for v in value]
    if isinstance(value, jinja2.StrictUndefined):
        value._fail_with_undefined_error()
    if isinstance(value, jinja2.Undefined):
        return ""  # the missing else of `{{ 'x' if cond }}` (Jinja2's lenient Undefined)
    if isinstance(value, str | bytes):
        return value
    if top and isinstance(value, Mapping):
        return {_plain(k, top=top): _plain(v, top=top) for k, v in value.items()}
    if (top and isinstance(value, Iterable)) or isinstance(value, Iterator):
        return [_plain(v, top=top) for v in value]
    return value


@functools.cache
def _classes() -> tuple[Any, Any, Any]:
    """The environment class, undefined class and finalize function (built on first use:
    Jinja2 is imported only to render)."""
    import jinja2

    class AnsibleEnvironment(jinja2.Environment):
        concat = staticmethod(_concat)

    class Undefined(jinja2.ChainableUndefined, jinja2.StrictUndefined):
        """Strict (using it is an error) but chainable (``a.b`` of an undefined ``a`` is
        undefined, so ``a.b is defined`` is false), as Ansible's undefined marker."""

    @jinja2.pass_context
    def finalize(_context: Any, value: Any) -> Any:
        """Each ``{{ }}`` value: an undefined one fails here, on its template line (the
        missing else of ``{{ 'x' if cond }}`` is empty text). Needing the context keeps Jinja2
        from folding ``{{ 42 }}`` into text."""
        if isinstance(value, jinja2.StrictUndefined):
            value._fail_with_undefined_error()
        if isinstance(value, jinja2.Undefined):
            return ""
        return value

    return AnsibleEnvironment, Undefined, finalize


def _undefined_message(message: str) -> str:
    text = message.rstrip(".")
    for name, why in _ABSENT.items():
        if text == f"'{name}' is undefined":
            return f"{text}. tectum does not provide {why}"
    if "has no attribute" in text:
        return (f"{text}. Check the name, or guard it with `is defined` or "
                "`| default(...)`")
    return f"{text}. Pass it in the resource's vars={{...}}"


def _line(exc: BaseException, templates: set[str], path: str, header: bool) -> str:
    """``:LINE`` of the innermost traceback frame in a template (another template's name when
    the error is in an included one), or ``""``."""
    where = ""
    tb = exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename in templates:
            line = tb.tb_lineno + (1 if filename == path and header else 0)
            where = f":{line}" if filename == path else f" (in {filename}:{line})"
        tb = tb.tb_next
    return where
