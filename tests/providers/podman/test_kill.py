"""kill -9 during a bake and during a container replace: the next apply finishes what the
killed run was doing (adopting what it made, removing what it left half-made), and a destroy
then leaves nothing behind — no build container, no temporary container, no image but the
store's own base (0 orphans)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Result, ok, tectum_env
from tests.harness.images import BASE_IMAGE, PodmanStore, base_tarball

pytestmark = pytest.mark.slow

# (the container's PID 1 is a shell that exits on SIGTERM: ``sleep`` as PID 1 ignores it,
# and every stop, replace and destroy then waited out podman's 10 s stop timeout)
STACK = '''
from tectum import var
from tectum.host import File, Package
from tectum.podman import Container, Image

greeting = var("greeting", str, default="one")

def role(host, greeting):
    for i in range(5):
        File(f"f{i}", path=f"/srv/f{i}.txt", content=f"{greeting} {i}\\n")

image = Image("app", name="localhost/kill-SUFFIX", base_tarball="TARBALL", role=role,
              role_args={"greeting": greeting})
Container("web", name="web-SUFFIX", image=image.image_id, network="none",
          command=["sh", "-c", "trap 'exit 0' TERM; sleep infinity & wait"],
          create_before_destroy=CBD)
'''

#: ``python KILLER SUBCOMMAND WHEN N PROJECT [VAR=VALUE]``: ``tectum apply`` that kills itself
#: (SIGKILL) just before / after its N-th podman call whose first argument is SUBCOMMAND
#: (``exec``: a command in the build container, through the podman connector)
_KILLER = """\
import os, signal, sys
from tectum.providers.podman import client, connector
word, when, nth, project = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
seen = [0]
def hit():
    seen[0] += 1
    return seen[0] == nth
real_run = client.Podman.run
def run(self, args, *a, **k):
    if args[0] != word or not hit():
        return real_run(self, args, *a, **k)
    if when == "after":
        real_run(self, args, *a, **k)
    os.kill(os.getpid(), signal.SIGKILL)
client.Podman.run = run
real_exec = connector.PodmanConnector._exec
def _exec(self, script, args, *a, **k):
    if word != "exec" or not hit():
        return real_exec(self, script, args, *a, **k)
    if when == "after":
        real_exec(self, script, args, *a, **k)
    os.kill(os.getpid(), signal.SIGKILL)
connector.PodmanConnector._exec = _exec
from tectum.cli.main import main
sys.argv = ["tectum", "apply", "--auto-approve", project, *sys.argv[5:]]
main()
"""


def killed_apply(project: Path, word: str, when: str, nth: int, *more: str) -> None:
    killer = project / "killer.py"
    killer.write_text(_KILLER)
    proc = subprocess.run([sys.executable, str(killer), word, when, str(nth), str(project),
                           *more], cwd=project, env=tectum_env(), capture_output=True,
                          text=True, timeout=600, stdin=subprocess.DEVNULL, check=False)
    killer.unlink()
    assert proc.returncode == -9, f"not killed at {word} {when}:\n{proc.stdout}\n{proc.stderr}"


def leftovers(store: PodmanStore, suffix: str) -> tuple[list[str], list[str]]:
    containers = [c for c in store.containers()]
    images = [i for i in store.images() if i != BASE_IMAGE]
    dangling = store.podman.run(["images", "-q", "--filter", "dangling=true"],
                                mutating=False).stdout.decode().split()
    return containers, images + dangling


# (subcommand, before/after, which call, the apply it interrupts: first / a role change,
# create_before_destroy): each step of a bake (the build container started, the recipe
# half-applied, before and after the commit, before the tag) and of a replace (the old one
# removed, the new one made, the temporary one not yet renamed); 10 points, ~4 min in CI
POINTS = [("run", "after", 1, "first", False), ("exec", "after", 2, "first", False),
          ("commit", "before", 1, "first", False), ("commit", "after", 1, "first", False),
          ("tag", "after", 1, "change", False), ("start", "after", 1, "first", False),
          ("rm", "after", 1, "change", False), ("create", "after", 1, "change", True),
          ("rename", "before", 1, "change", True), ("rename", "after", 1, "change", True)]


@pytest.mark.parametrize("word, when, nth, phase, cbd", POINTS)
def test_a_killed_apply_is_finished_by_the_next_and_destroy_leaves_nothing(
        tectum: Callable[..., Result], make_project: Callable[..., Path], store: PodmanStore,
        suffix: str, word: str, when: str, nth: int, phase: str, cbd: bool) -> None:
    stack = STACK.replace("SUFFIX", suffix).replace("TARBALL", str(base_tarball())) \
        .replace("CBD", str(cbd))
    root = make_project(stack, {"tectum.toml": store.toml()})
    try:
        more: list[str] = []
        if phase == "change":
            ok(tectum("apply", "-auto-approve", cwd=root))
            more = ["-var", "greeting=two"]
        killed_apply(root, word, when, nth, *more)
        # the next apply finishes the job; then nothing is left to do
        again = tectum("apply", "-auto-approve", *more, cwd=root)
        assert again.returncode == 0, again.output
        assert "No changes" in ok(tectum("plan", *more, cwd=root)).output
        out = store.podman.run(["exec", f"web-{suffix}", "cat", "/srv/f0.txt"],
                               mutating=False).stdout.decode()
        assert out == ("two 0\n" if phase == "change" else "one 0\n")
    finally:
        result = tectum("destroy", "-auto-approve", *more, cwd=root)
    assert result.returncode == 0, result.output
    assert leftovers(store, suffix) == ([], []), "orphans after destroy"
