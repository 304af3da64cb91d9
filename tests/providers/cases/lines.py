"""Conformance cases of ``line_in_file``, ``block_in_file`` and ``ini_value``
(:mod:`tectum.providers.host.lines`): each edits a file under ``tmp_path`` that holds lines
of its own, which every step must leave as they are."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

from tectum.testing import Case

#: lines that are not the resources' own: they must survive every step
OTHERS = "# kept as it is\nPort 22\n\n[main]\nkey = 1  ; a comment\n"


def _unchanged_others(path: Path) -> None:
    text = path.read_text()
    for line in OTHERS.splitlines():
        assert line in text.splitlines(), f"{line!r} was lost from {path}:\n{text}"


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} is not in {path}:\n{text}"
    path.write_text(text.replace(old, new))


@contextmanager
def line_case(tmp: Path) -> Iterator[Case]:
    conf = tmp / "sshd_config"
    conf.write_text(OTHERS)
    path = str(conf)
    yield Case("line_in_file", {"path": path, "line": "MaxSessions 5",
                                "regexp": "^MaxSessions ", "insert_after": "^Port "},
               update={"line": "MaxSessions 7"},
               tamper=lambda _t, _r: _replace(conf, "MaxSessions 7", "MaxSessions 99"),
               drift="line",
               import_id=json.dumps({"path": path, "regexp": "^MaxSessions "}),
               root=str(tmp))
    _unchanged_others(conf)


@contextmanager
def block_case(tmp: Path) -> Iterator[Case]:
    conf = tmp / "hosts"
    conf.write_text(OTHERS)
    path = str(conf)
    yield Case("block_in_file", {"path": path, "block": "10.0.0.1 db\n10.0.0.2 cache\n"},
               update={"block": "10.0.0.3 queue\n"},
               tamper=lambda _t, _r: _replace(conf, "10.0.0.3 queue", "10.9.9.9 by hand"),
               drift="block", import_id=path, root=str(tmp))
    _unchanged_others(conf)


@contextmanager
def ini_case(tmp: Path) -> Iterator[Case]:
    conf = tmp / "app.ini"
    conf.write_text(OTHERS)
    path = str(conf)
    yield Case("ini_value", {"path": path, "section": "main", "option": "workers",
                             "value": "4"},
               update={"value": "8"},
               tamper=lambda _t, _r: _replace(conf, "workers = 8", "workers = 16"),
               drift="value", import_id=f"{path}:main:workers", root=str(tmp))
    _unchanged_others(conf)


BUILDERS: dict[str, Callable[[Path], AbstractContextManager[Case]]] = {
    "line_in_file": line_case,
    "block_in_file": block_case,
    "ini_value": ini_case,
}

#: files under tmp_path only: no marker
MARKS: dict[str, list[pytest.MarkDecorator]] = {}
