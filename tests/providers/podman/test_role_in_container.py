"""A role applied to a running container (``apply_role(role, container)``) in the same plan as
the container: its files are made after the container, read through ``podman exec`` in the
host's one round trip, made anew when the container is replaced, and go with it on destroy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import Result, ok
from tests.harness.images import PodmanStore

STACK = '''
from tectum import apply_role, var
from tectum.host import Directory, File
from tectum.podman import Container

motd = var("motd", str, default="one")
image = var("image", str, default="BASE")

def conf_role(host):
    d = Directory("conf", path="/etc/app", mode="0755")
    File("motd", path=f"{d.path}/motd", content=f"{motd} on {host.address}\\n", mode="0640")

web = [Container(f"web{i}", name=f"web{i}-SUFFIX", image=image, network="none",
                 command=["sh", "-c", "trap 'exit 0' TERM; sleep infinity & wait"]) for i in (1, 2)]
apply_role(conf_role, web)
'''


def test_a_role_configures_containers_in_the_same_plan(
        tectum: Callable[..., Result], make_project: Callable[..., Path],
        store: PodmanStore, suffix: str) -> None:
    base = store.import_base()
    root = make_project(STACK.replace("SUFFIX", suffix).replace("BASE", base),
                        {"tectum.toml": store.toml()})
    c1, c2 = f"web1-{suffix}", f"web2-{suffix}"
    try:
        plan = ok(tectum("plan", cwd=root))
        assert 'host["podman:' + c1 + '"].file.motd' in plan.output, plan.output
        assert "Plan: 6 to add" in plan.output
        ok(tectum("apply", "-auto-approve", cwd=root))
        assert store.cat(c1, "/etc/app/motd") == f"one on {c1}\n"
        assert store.cat(c2, "/etc/app/motd") == f"one on {c2}\n"
        for _ in range(3):
            assert "No changes" in ok(tectum("plan", cwd=root)).output
        # a change by hand inside a container is drift of that host's file
        store.podman.run(["exec", c1, "sh", "-c", "echo hacked > /etc/app/motd"])
        plan = ok(tectum("plan", cwd=root))
        assert f'host["podman:{c1}"].file.motd: content' in plan.output, plan.output
        ok(tectum("apply", "-auto-approve", cwd=root))
        assert store.cat(c1, "/etc/app/motd") == f"one on {c1}\n"
        # another image: the containers are replaced, their files made anew in the new ones
        store.podman.run(["commit", c1, f"localhost/other-{suffix}:1"])
        plan = ok(tectum("plan", "-var", f"image=localhost/other-{suffix}:1", cwd=root))
        assert "made anew in the new podman_container.web1" in plan.output, plan.output
        ok(tectum("apply", "-auto-approve", "-var", f"image=localhost/other-{suffix}:1",
                  cwd=root))
        assert store.cat(c2, "/etc/app/motd") == f"one on {c2}\n"
        assert "No changes" in ok(tectum("plan", "-var", f"image=localhost/other-{suffix}:1",
                                         cwd=root)).output
        # a container stopped by hand: it is started; its files are left for the next run
        store.podman.run(["stop", "-t", "0", c2])
        plan = ok(tectum("plan", "-var", f"image=localhost/other-{suffix}:1", cwd=root))
        assert "podman_container.web2" in plan.output and "running" in plan.output
        started = tectum("apply", "-auto-approve", "-var", f"image=localhost/other-{suffix}:1",
                         cwd=root)
        # (its files could not be read while it was stopped: said, and left for the next run)
        assert f"Host podman:{c2} is unreachable" in started.output, started.output
        assert "podman_container.web2: updated" in started.output
        assert "No changes" in ok(tectum("plan", "-var", f"image=localhost/other-{suffix}:1",
                                         cwd=root)).output
    finally:
        result = tectum("destroy", "-auto-approve", "-var",
                        f"image=localhost/other-{suffix}:1", cwd=root)
        store.podman.run(["rm", "-f", c1, c2], check=False)
        store.podman.run(["rmi", f"localhost/other-{suffix}:1"], check=False)
    assert result.returncode == 0, result.output
    assert "goes with podman_container.web1" in result.output, result.output
    assert c1 not in store.containers() and c2 not in store.containers()
    state = ok(tectum("state", "list", cwd=root)).output
    assert "podman" not in state, state
