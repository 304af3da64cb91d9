"""Container images for the podman tests: the test fleet's debootstrap root filesystem as a
tarball (built once, cached beside it), and a throw-away podman storage per test session.

No registry is reachable here, so the base image is always ``podman import`` of that tarball::

    with PodmanStore() as store:            # its own --root/--runroot under a temporary dir
        base = store.import_base()          # "localhost/tectum-test-base:bookworm"
        store.podman.run(["run", "--rm", *store.podman.ulimit_args(), base, "true"])
        store.settings                      # the [providers.podman] table for tectum.toml

``python3 -m tests.harness.images`` builds the tarball ahead of time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from tectum.providers.podman.client import Podman
from tests.harness.fleet import CACHE_DIR, RECIPE, SUITE, _flock, build_base

#: the base image's name in every test store
BASE_IMAGE = f"localhost/tectum-test-base:{SUITE}"
#: what podman needs on this machine (../shared/TESTING.md): runc, cgroupfs, explicit ulimits
SETTINGS: dict[str, Any] = {
    "runtime": "runc",
    "cgroup_manager": "cgroupfs",
    "ulimits": {"nofile": "1024:20000", "nproc": "4096:4096"},
}


def ensure_podman() -> None:
    """apt-get install podman and runc when podman is missing."""
    if shutil.which("podman") and shutil.which("runc"):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "-q", "podman", "runc"], env=env, check=True,
                   capture_output=True, timeout=900)


def base_tarball() -> Path:
    """The fleet's base root filesystem as an uncompressed tarball, built on first use."""
    base = build_base()
    tarball = CACHE_DIR / f"image-{SUITE}.tar"
    marker = CACHE_DIR / f"image-{SUITE}.complete"
    with _flock(CACHE_DIR / "image.lock"):
        if marker.is_file() and tarball.is_file() \
                and json.loads(marker.read_text()).get("recipe") == RECIPE:
            return tarball
        marker.unlink(missing_ok=True)
        partial = tarball.with_suffix(".partial")
        subprocess.run(["tar", "-C", str(base.rootfs), "--numeric-owner", "-cf", str(partial),
                        "."], check=True, capture_output=True, timeout=600)
        os.replace(partial, tarball)
        marker.write_text(json.dumps({"recipe": RECIPE, "built": time.time()}) + "\n")
        return tarball


class PodmanStore:
    """A podman storage of its own (``--root``/``--runroot`` in a temporary directory), so
    tests never touch other images or containers; :meth:`close` removes everything in it."""

    def __init__(self) -> None:
        ensure_podman()
        self.dir = Path(tempfile.mkdtemp(prefix="tectum-podman-"))
        self.settings: dict[str, Any] = {**SETTINGS, "root": str(self.dir / "root"),
                                         "runroot": str(self.dir / "run"),
                                         "tmpdir": str(self.dir / "tmp")}
        self.podman = Podman(root=self.settings["root"], runroot=self.settings["runroot"],
                             tmpdir=self.settings["tmpdir"], runtime="runc",
                             cgroup_manager="cgroupfs",
                             ulimits=SETTINGS["ulimits"], log_path="")
        self._base: str | None = None

    def __enter__(self) -> PodmanStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def toml(self) -> str:
        """``[providers.podman]`` for a project's ``tectum.toml``."""
        limits = ", ".join(f'{k} = "{v}"' for k, v in SETTINGS["ulimits"].items())
        return ("[providers.podman]\n"
                f'root = "{self.settings["root"]}"\nrunroot = "{self.settings["runroot"]}"\n'
                f'tmpdir = "{self.settings["tmpdir"]}"\n'
                'runtime = "runc"\ncgroup_manager = "cgroupfs"\n'
                f"ulimits = {{ {limits} }}\n")

    def import_base(self) -> str:
        """Import the base tarball once into this store; returns :data:`BASE_IMAGE`."""
        if self._base is None:
            self.podman.run(["import", "--change", 'CMD ["/bin/sh"]', str(base_tarball()),
                             BASE_IMAGE])
            self._base = BASE_IMAGE
        return self._base

    def cat(self, container: str, path: str) -> str:
        """The text of ``path`` in ``container``, or ``<exit N>`` when it cannot be read."""
        proc = self.podman.run(["exec", container, "cat", path], check=False, mutating=False)
        return proc.stdout.decode() if proc.returncode == 0 else f"<exit {proc.returncode}>"

    def containers(self) -> list[str]:
        """Names of every container in the store."""
        out = self.podman.run(["ps", "-a", "--format", "{{.Names}}"], mutating=False)
        return out.stdout.decode().split()

    def images(self) -> list[str]:
        """``REPOSITORY:TAG`` of every tagged image in the store."""
        out = self.podman.run(["images", "--format", "{{.Repository}}:{{.Tag}}"],
                              mutating=False)
        return [line for line in out.stdout.decode().split() if not line.endswith(":<none>")]

    def close(self) -> None:
        subprocess.run(self.podman.argv(["system", "reset", "-f"]), capture_output=True,
                       timeout=300, stdin=subprocess.DEVNULL)
        subprocess.run(["umount", "-R", "-l", str(self.dir)], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


if __name__ == "__main__":
    print(base_tarball())
