"""Jinja2 templates for file content (Jinja2 is imported only when a template is rendered)."""

from __future__ import annotations

from typing import Any


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
