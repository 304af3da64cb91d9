"""README's Quickstart commands, read from README.md (never copied), for the tests and for CI.

The Quickstart section (from ``## Quickstart`` to the next ``## `` heading) holds one ``sh``
code block; its commands are its lines that are neither blank nor comments, a line ending in
``\\`` continued by the next. Each is returned exactly as written (a continued one with its
backslash-newlines, a trailing comment included), to be run with ``bash -c``: the shell joins
the lines and drops the comment itself.

    python3 -m tests.harness.readme 1     # prints the first command (install, then the apply)
    python3 -m tests.harness.readme 2     # prints the second one (the test suite)

Only the standard library is used, so any ``python3`` runs it before anything is installed.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


class ReadmeError(ValueError):
    """README.md has no Quickstart section, or no ``sh`` block with commands in it."""


def quickstart_commands(readme: Path = README) -> list[str]:
    """The commands of the Quickstart's ``sh`` block, in order (at least one).

    Raises ReadmeError (naming README.md and what is missing) when the section or its block is
    not there or the block has no command."""
    text = readme.read_text(encoding="utf-8")
    section = re.search(r"^## Quickstart[ \t]*\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    if section is None:
        raise ReadmeError(f"{readme}: no '## Quickstart' section")
    block = re.search(r"^```(?:sh|shell|bash|console)[ \t]*\n(.*?)^```", section[1], re.M | re.S)
    if block is None:
        raise ReadmeError(f"{readme}: the Quickstart section has no ```sh code block")
    commands: list[str] = []
    pending = ""
    for line in block[1].splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip() + "\n"
            continue
        commands.append((pending + line).strip())
        pending = ""
    if pending:
        commands.append(pending.strip())
    if not commands:
        raise ReadmeError(f"{readme}: the Quickstart's sh block has no command")
    return commands


def main(argv: Sequence[str]) -> int:
    usage = "usage: python3 -m tests.harness.readme N   (the Nth command of README's Quickstart)"
    if len(argv) != 1 or not argv[0].isdigit() or int(argv[0]) < 1:
        print(usage, file=sys.stderr)
        return 2
    try:
        commands = quickstart_commands()
    except (OSError, ReadmeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    number = int(argv[0])
    if number > len(commands):
        print(f"error: {README}: the Quickstart has {len(commands)} command(s), not {number}",
              file=sys.stderr)
        return 1
    print(commands[number - 1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
