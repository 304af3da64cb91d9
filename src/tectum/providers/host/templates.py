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
        raise TemplateError(f"template {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"cannot read template {path}: {exc}") from None
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             autoescape=False)
    try:
        return env.from_string(source).render(**variables)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{path}:{exc.lineno}: template syntax error: {exc.message}") from None
    except jinja2.TemplateError as exc:
        raise TemplateError(f"{path}: template error: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - errors raised by expressions in the template
        raise TemplateError(f"{path}: {type(exc).__name__}: {exc}") from None
