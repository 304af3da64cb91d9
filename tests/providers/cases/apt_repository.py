"""The conformance case of ``apt_repository``: a real signed repository served on 127.0.0.1
(:func:`tests.providers.host.test_apt_repository.local_repo`), its keyring in
``/etc/apt/keyrings``; the sources file, the keyring and the package lists are put back
afterwards."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from tectum.providers.host.apt_repository import sources_path
from tectum.testing import Case
from tests.providers.host.test_apt_repository import (
    cleanup,
    keyring_path,
    local_repo,
    needs_tools,
)


@contextmanager
def apt_repository_case(tmp: Path) -> Iterator[Case]:
    with local_repo(tmp) as repo:
        keyring = keyring_path(repo)
        arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                              check=True).stdout.strip()

        def tamper(_target: Any, _record: dict[str, Any]) -> None:
            path = Path(sources_path(repo.package))
            path.write_text(path.read_text().replace("Enabled: yes", "Enabled: no"))

        try:
            Path(keyring).write_text(repo.key)
            yield Case("apt_repository",
                       {"name": repo.package, "uris": [repo.uri], "suites": ["stable"],
                        "components": ["main"], "signed_by": keyring},
                       update={"architectures": [arch]}, tamper=tamper, drift="enabled",
                       import_id=repo.package, root=str(tmp))
        finally:
            cleanup(repo, keyring)


BUILDERS: dict[str, Callable[[Path], AbstractContextManager[Case]]] = {
    "apt_repository": apt_repository_case,
}

MARKS: dict[str, list[pytest.MarkDecorator]] = {
    "apt_repository": [pytest.mark.apt, needs_tools],
}
