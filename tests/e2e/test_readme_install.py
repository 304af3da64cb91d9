"""README's Quickstart, first command, on a fresh Debian 12: read from README.md, run as written.

A fresh test host of the fleet (tests.harness.fleet: the cached ``debootstrap --variant=minbase``
of bookworm, with no Python at all) gets a copy of this checkout (the files git would commit:
tracked and untracked-but-not-ignored) in ``/root/tectum``; README's first command runs there
as root over SSH, in root's shell, exactly as README gives it. apt reaches the machine's mirror
through the fleet's apt-cacher-ng; pip uses this machine's pip configuration, relayed by
tests.harness.pip_relay (the host reaches only the bridge address). Then ``curl
http://127.0.0.1:8080/`` inside the host must answer with the page, a second plan must find
nothing to do, and ``tectum destroy`` must take it all away again (what .ci/run does after it
runs the same command on the CI machine). The host and everything in it go with the fleet.
"""

from __future__ import annotations

import io
import os
import shlex
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.fleet import BRIDGE_ADDRESS, Fleet
from tests.harness.pip_relay import PipRelay
from tests.harness.readme import README, quickstart_commands

pytestmark = [
    pytest.mark.fleet,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the fleet harness needs root"),
]

ROOT = README.parent
CHECKOUT = "/root/tectum"
PIP_FILES = "/var/tmp/tectum-test-pip"
TECTUM = ".venv/bin/tectum"  # where README's first command installs tectum (checked below)
EXAMPLE = "examples/webserver"
URL = "http://127.0.0.1:8080/"  # README: "Then `curl http://127.0.0.1:8080/` shows the page."


def checkout_files(root: Path = ROOT) -> list[str]:
    """The files a commit of ROOT would hold (git's view; without git, everything but the
    caches, virtual environments and state that .gitignore names)."""
    if shutil.which("git") and (root / ".git").exists():
        proc = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others",
                               "--exclude-standard"], capture_output=True, check=True)
        names = sorted({n for n in proc.stdout.decode().split("\0") if n})
        return [n for n in names if (root / n).is_file() or (root / n).is_symlink()]
    skip = {".git", ".venv", ".tectum", "__pycache__", ".pytest_cache", ".mypy_cache",
            ".ruff_cache", ".hypothesis", ".benchmarks", "build", "dist"}
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in skip and not d.endswith(".egg-info")]
        found += [str(Path(dirpath, f).relative_to(root)) for f in filenames]
    return sorted(found)


def copy_checkout(fleet: Fleet, host: str, target: str) -> int:
    """Stream the checkout into HOST:TARGET as a tar archive over ssh; the number of files."""
    names = checkout_files()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in names:
            tar.add(ROOT / name, arcname=name, recursive=False)
    proc = subprocess.run(
        fleet.ssh_command(host, f"mkdir -p {target} && tar -x -f - -C {target}"),
        input=buffer.getvalue(), capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return len(names)


@pytest.fixture
def fresh_host() -> Iterator[tuple[Fleet, str]]:
    with Fleet(names=["fresh"], apt=True) as fleet:
        yield fleet, "fresh"


def run(fleet: Fleet, host: str, script: str, timeout: float = 300
        ) -> subprocess.CompletedProcess[str]:
    return fleet.run(host, f"cd {CHECKOUT} || exit 97\n{script}", timeout=timeout)


def test_readme_first_command_on_a_fresh_debian(fresh_host: tuple[Fleet, str]) -> None:
    fleet, host = fresh_host
    install = quickstart_commands()[0]
    assert f"{TECTUM} apply" in install, f"README's first command no longer runs {TECTUM}"

    # fresh: no Python, no pip, no venv, no nginx
    bare = fleet.run(host, "command -v python3 pip pip3 nginx; dpkg -s python3-venv")
    assert bare.stdout == "" and bare.returncode != 0, bare.stdout
    assert copy_checkout(fleet, host, CHECKOUT) > 50

    with PipRelay(BRIDGE_ADDRESS) as relay:
        env, files = relay.host_settings(PIP_FILES)
        for path, content in files.items():
            put = subprocess.run(
                fleet.ssh_command(host, f"mkdir -p {PIP_FILES} && cat > {shlex.quote(path)}"),
                input=content, capture_output=True, timeout=60)
            assert put.returncode == 0, put.stderr.decode(errors="replace")
        exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
        done = run(fleet, host, exports + install, timeout=1200)
        assert done.returncode == 0, (
            f"README's first command failed ({done.returncode}) on a fresh Debian:\n"
            f"{done.stdout[-6000:]}\n--- stderr ---\n{done.stderr[-4000:]}\n--- pip relay ---\n"
            + "\n".join(relay.log[-30:]))

    # the venv is Debian's own Python, and README's test tools are in it
    venv = run(fleet, host, ".venv/bin/python -c 'import sys; print(sys.base_prefix)' && "
               ".venv/bin/python -m pytest --version && .venv/bin/ruff --version")
    assert venv.returncode == 0 and venv.stdout.splitlines()[0] == "/usr", venv.stdout

    # README: "Then `curl http://127.0.0.1:8080/` shows the page."
    curl = fleet.run(host, "apt-get install -y -q --no-install-recommends curl >/dev/null && "
                     f"curl -fsS {URL}", timeout=300)
    index = fleet.run(host, "cat /srv/tectum-www/index.html")  # the example's default root
    assert curl.returncode == 0, curl.stderr
    assert "<h1>" in curl.stdout and curl.stdout == index.stdout, (curl.stdout, index.stdout)

    # README: "Run the same command again: No changes."
    plan = run(fleet, host, f"{TECTUM} plan --detailed-exitcode {EXAMPLE}")
    assert plan.returncode == 0, plan.stdout + plan.stderr

    # what .ci/run does after README's first command: destroy leaves nothing behind
    gone = run(fleet, host, f"{TECTUM} destroy --auto-approve {EXAMPLE}", timeout=300)
    assert gone.returncode == 0, gone.stdout + gone.stderr
    after = fleet.run(host, f"curl -sS -m 5 {URL}; dpkg-query -W -f '${{Status}}' nginx")
    assert "install ok installed" not in after.stdout, after.stdout
