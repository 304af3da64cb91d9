"""Jinja2 templates for file content (Jinja2 is imported only when a template is rendered).

Besides Jinja2's own filters, templates have Ansible's ``b64encode`` and ``b64decode`` (UTF-8
text ⇄ standard base64), e.g. ``Authorization: Basic {{ (user ~ ":" ~ password) | b64encode }}``.
A secret encoded so stays masked in output (:mod:`tectum.masking` masks every base64 alignment).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from tectum.values import SECRET_SOURCES, TOKEN_RE


class TemplateError(ValueError):
    """A template is missing or does not render; the message names the file and line."""


def render(path: str, variables: dict[str, Any]) -> str:
    """Render the template at ``path`` with ``variables`` (StrictUndefined: an undefined name is
    an error, not an empty string — Ansible's ``DEFAULT_UNDEFINED_VAR_BEHAVIOR`` default)."""
    import jinja2

    try:
        with open(path, encoding="utf-8") as fh:
            source = fh.read()
    except FileNotFoundError:
        raise TemplateError(
            f"template {path} does not exist. Template paths are relative to the directory of "
            "the file that declares the resource; create the template or fix the template "
            "argument"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"cannot read template {path}: {exc}") from None
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             autoescape=False)
    env.filters["b64encode"] = b64encode
    env.filters["b64decode"] = b64decode
    try:
        code = env.compile(source, filename=path)  # the filename gives errors a line
        template = env.template_class.from_code(env, code, env.make_globals(None), None)
        return template.render(**variables)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(
            f"{path}:{exc.lineno}: template syntax error: {str(exc.message).rstrip('.')}"
        ) from None
    except jinja2.UndefinedError as exc:
        raise TemplateError(
            f"{path}{_line(exc, path)}: {str(exc.message).rstrip('.')}. Pass it in the "
            "resource's vars={...}"
        ) from None
    except Exception as exc:  # noqa: BLE001 - errors raised by expressions in the template
        raise TemplateError(f"{path}{_line(exc, path)}: {type(exc).__name__}: {exc}") from None


def _line(exc: BaseException, path: str) -> str:
    """``:LINE`` of the innermost traceback frame in the template, or ``""``."""
    line = ""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == path:
            line = f":{tb.tb_lineno}"
        tb = tb.tb_next
    return line


def _deferred(value: str, name: str) -> bool:
    """Whether ``value`` holds a token (a value not known yet). Raises :class:`ValueError` for
    a reference to a resource attribute known only after apply: an encoding of the token would
    be written as it is. A secret or sensitive variable is unknown only in ``tectum validate``
    (which does not open the secrets file); the content then stays unknown, as it is."""
    tokens = [m[1] for m in TOKEN_RE.finditer(value)]
    later = [t for t in tokens if t not in SECRET_SOURCES]
    if later:
        raise ValueError(
            f"{name} of a value that is known only after apply (a reference to {later[0]}): "
            "the template is rendered when the plan is made, so it cannot encode it. Encode a "
            "value known at plan time (a secret, a variable, a configured attribute)")
    return bool(tokens)


def b64encode(value: Any) -> str:
    """``{{ text | b64encode }}``: the standard base64 of ``text`` (UTF-8), as Ansible's
    filter. Raises :class:`ValueError` (a template error naming the line) for a value known
    only after apply."""
    text = str(value)
    if _deferred(text, "b64encode"):
        return text
    return base64.b64encode(text.encode("utf-8", "surrogateescape")).decode("ascii")


def b64decode(value: Any) -> str:
    """``{{ text | b64decode }}``: the UTF-8 text that standard base64 ``text`` encodes.
    Raises :class:`ValueError` for text that is not base64 of UTF-8, or a value known only
    after apply."""
    text = str(value)
    if _deferred(text, "b64decode"):
        return text
    try:
        return base64.b64decode(text, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError(f"b64decode: not base64 of UTF-8 text ({exc})") from None
