"""Conformance cases of ``download`` (from a real HTTP server on 127.0.0.1, into ``tmp_path``)
and ``archive`` (a real tarball made in ``tmp_path``, unpacked there)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tectum.testing import Case
from tests.providers.cases import Builder
from tests.providers.host.test_download import TREE, Server, make_tar


@contextmanager
def download_case(tmp: Path) -> Iterator[Case]:
    www = tmp / "www"
    www.mkdir()
    server = Server(www)
    try:
        checksum = server.publish("tool", b"release 1\n")
        path = tmp / "tool"

        def tamper(_target: Any, _record: dict[str, Any]) -> None:
            path.write_bytes(b"changed by hand\n")

        yield Case("download", {"path": str(path), "url": server.url("tool"),
                                "checksum": checksum, "mode": "0640"},
                   update={"mode": "0600"}, tamper=tamper, drift="checksum",
                   import_id=str(path), root=str(tmp))
    finally:
        server.close()


@contextmanager
def archive_case(tmp: Path) -> Iterator[Case]:
    src = make_tar(tmp / "app.tar.gz", TREE)
    dest = tmp / "dest"
    dest.mkdir()
    yield Case("archive", {"src": str(src), "dest": str(dest),
                           "creates": str(dest / "app/bin/run")},
               update={"group": "nogroup"},
               tamper=lambda _t, _r: os.unlink(dest / "app/lib/x.txt"), drift="files",
               root=str(tmp),
               skip={"import": "an extraction is not one object a read can look up by an "
                               "ID: declare the archive with creates= and the first plan "
                               "adopts an extraction already there"})


BUILDERS: dict[str, Builder] = {"download": download_case, "archive": archive_case}

#: chgrp to another group needs root
MARKS: dict[str, list[pytest.MarkDecorator]] = {
    "archive": [pytest.mark.skipif(os.geteuid() != 0, reason="needs root")],
}
