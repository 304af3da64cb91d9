"""examples/containers for real: an image baked from a role (busybox's httpd installed with
apt inside the build container), three containers from it configured by a role in the same
plan, and this machine's nginx balancing over them. Served through nginx; ten plans with no
change; a container stopped by hand and a file changed inside one are repaired; a new greeting
rebuilds the image and replaces the containers; ``rollback --to 1`` brings the first image back
without a build; destroy removes containers, images and the site. The podman storage is the
test's own (``TECTUM_PROVIDER_PODMAN_*``), ports are free ones."""

from __future__ import annotations

import json
import shutil
import socket
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Result, ok, run_tectum
from tests.harness.images import PodmanStore, base_tarball

pytestmark = [pytest.mark.apt, pytest.mark.system, pytest.mark.podman]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "containers"


def _free_ports(count: int) -> list[int]:
    """``count`` consecutive free ports (the example numbers its containers' ports so)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            first = int(s.getsockname()[1])
        if first + count >= 65535:
            continue
        ok = True
        for port in range(first, first + count):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
        if ok:
            return list(range(first, first + count))
    raise AssertionError("no free ports")


def _get(url: str, attempts: int = 50) -> str:
    last: Exception | None = None
    for _ in range(attempts):
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.read().decode()
        except OSError as exc:
            last = exc
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer: {last}")


@pytest.fixture
def example(tmp_path: Path) -> Iterator[tuple[Path, list[str], dict[str, str], PodmanStore]]:
    project = tmp_path / "containers"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns(".tectum"))
    tag = uuid.uuid4().hex[:8]
    ports = _free_ports(4)
    site = f"tectum-test-{tag}"
    args = ["-var", f"base_tarball={base_tarball()}", "-var", f"port={ports[0]}",
            "-var", f"first_port={ports[1]}", "-var", f"site_name={site}"]
    store = PodmanStore()
    env = {f"TECTUM_PROVIDER_PODMAN_{k.upper()}": v for k, v in store.settings.items()
           if isinstance(v, str)}
    try:
        yield project, args, {"url": f"http://127.0.0.1:{ports[0]}/",
                              "site": f"/etc/nginx/sites-enabled/{site}", **env}, store
    finally:
        Path(f"/etc/nginx/sites-enabled/{site}").unlink(missing_ok=True)
        store.close()


def test_containers_example(example: tuple[Path, list[str], dict[str, str], PodmanStore]
                            ) -> None:
    project, args, info, store = example
    env = {k: v for k, v in info.items() if k.startswith("TECTUM_")}

    def tectum(*more: str) -> Result:
        return run_tectum(*more, cwd=project, env=env)

    try:
        ok(tectum("apply", "-auto-approve", *args))
        url = info["url"]
        assert "<h1>Hello from a tectum container</h1>" in _get(url)
        answered = {_get(url + "whoami.txt").strip() for _ in range(9)}
        assert answered == {"web1", "web2", "web3"}, answered
        for _ in range(10):
            assert "No changes" in ok(tectum("plan", *args)).output
        # drift: a container stopped by hand, a file changed inside another
        store.podman.run(["stop", "-t", "0", "web2"])
        store.podman.run(["exec", "web3", "sh", "-c", "echo hacked > /srv/www/whoami.txt"])
        plan = ok(tectum("plan", *args))
        assert "podman_container.web2: running" in plan.output, plan.output
        assert 'host["podman:web3"].file.whoami: content' in plan.output, plan.output
        tectum("apply", "-auto-approve", *args)  # (web2's file: read once it runs again)
        ok(tectum("apply", "-auto-approve", *args))
        assert "No changes" in ok(tectum("plan", *args)).output
        assert {_get(url + "whoami.txt").strip() for _ in range(9)} == {"web1", "web2", "web3"}
        # a new greeting: a new image, every container replaced
        ok(tectum("apply", "-auto-approve", *args, "-var", "greeting=second"))
        assert "<h1>second</h1>" in _get(url)
        images = [t for t in store.images() if "tectum-example-web" in t]
        assert len(images) == 3, images  # two versions and latest
        # back to version 1: its image is still kept, nothing is built
        log = project / "commands.log"
        rolled = run_tectum("rollback", "--to", "1", "--auto-approve", cwd=project,
                            env={**env, "TECTUM_COMMAND_LOG": str(log)})
        assert rolled.returncode == 0, rolled.output
        assert "<h1>Hello from a tectum container</h1>" in _get(url)
        calls = [json.loads(line) for line in log.read_text().splitlines()]
        podman_calls = [c["argv"][0] for c in calls if c.get("op") == "podman"
                        and c["mutating"]]
        assert "commit" not in podman_calls and "import" not in podman_calls, podman_calls
    finally:
        result = tectum("destroy", "-auto-approve", *args)
    assert result.returncode == 0, result.output
    assert store.containers() == []
    assert [t for t in store.images() if "tectum" in t and "test-base" not in t] == []
    assert not Path(info["site"]).exists()
