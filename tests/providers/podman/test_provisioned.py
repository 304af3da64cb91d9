"""Regressions around hosts provisioned by a container and around objects tectum did not make
(found by review): a targeted destroy deletes, it does not forget; a container stopped by
hand and replaced in one apply gets its files; an orphan on a stopped container is not "already
gone"; a name that is another container's id prefix never reaches that container; an image
name without a registry is not created again and again; an image built FROM a tectum image
survives destroy; targeting a replaced container brings its files along."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import Result, ok
from tests.harness.images import PodmanStore, base_tarball

ROLE_STACK = '''
from tectum import apply_role, var
from tectum.host import File
from tectum.podman import Container

image = var("image", str, default="BASE")
extra = var("extra", bool, default=True)

def role(host):
    File("a", path="/etc/a.txt", content="a\\n")
    if extra:
        File("b", path="/etc/b.txt", content="b\\n")

web = Container("web", name="web-SUFFIX", image=image, network="none",
                command=["sh", "-c", "trap 'exit 0' TERM; sleep infinity & wait"])
apply_role(role, web)
'''


def role_project(make_project: Callable[..., Path], store: PodmanStore, suffix: str) -> Path:
    stack = ROLE_STACK.replace("SUFFIX", suffix).replace("BASE", store.import_base())
    return make_project(stack, {"tectum.toml": store.toml()})


def test_a_targeted_destroy_of_a_file_in_a_container_deletes_it(
        tectum: Callable[..., Result], make_project: Callable[..., Path], store: PodmanStore,
        suffix: str) -> None:
    root = role_project(make_project, store, suffix)
    c = f"web-{suffix}"
    try:
        ok(tectum("apply", "-auto-approve", cwd=root))
        out = ok(tectum("destroy", "-auto-approve", "-target",
                        f'host["podman:{c}"].file.b', cwd=root)).output
        assert "goes with" not in out, out
        assert store.cat(c, "/etc/b.txt").startswith("<exit")  # deleted, not forgotten
        assert store.cat(c, "/etc/a.txt") == "a\n"
    finally:
        ok(tectum("destroy", "-auto-approve", cwd=root))
    assert c not in store.containers()


def test_a_stopped_container_replaced_in_one_apply_gets_its_files(
        tectum: Callable[..., Result], make_project: Callable[..., Path], store: PodmanStore,
        suffix: str) -> None:
    root = role_project(make_project, store, suffix)
    c = f"web-{suffix}"
    other = f"localhost/other-{suffix}:1"
    try:
        ok(tectum("apply", "-auto-approve", cwd=root))
        store.podman.run(["commit", c, other])
        store.podman.run(["stop", "-t", "0", c])
        ok(tectum("apply", "-auto-approve", "-var", f"image={other}", cwd=root))
        assert store.cat(c, "/etc/a.txt") == "a\n"
        plan = ok(tectum("plan", "-var", f"image={other}", cwd=root)).output
        assert "No changes" in plan, plan
    finally:
        ok(tectum("destroy", "-auto-approve", "-var", f"image={other}", cwd=root))
        store.podman.run(["rmi", other], check=False)


def test_a_file_left_out_while_its_container_is_stopped_is_not_called_gone(
        tectum: Callable[..., Result], make_project: Callable[..., Path], store: PodmanStore,
        suffix: str) -> None:
    root = role_project(make_project, store, suffix)
    c = f"web-{suffix}"
    try:
        ok(tectum("apply", "-auto-approve", cwd=root))
        store.podman.run(["stop", "-t", "0", c])
        plan = tectum("plan", "-var", "extra=false", cwd=root).output
        assert "already gone" not in plan, plan
        assert f'host["podman:{c}"].file.b' not in plan.split("Plan:")[0].split(
            "will perform")[-1], plan
        tectum("apply", "-auto-approve", "-var", "extra=false", cwd=root)  # starts it
        ok(tectum("apply", "-auto-approve", "-var", "extra=false", cwd=root))
        assert store.cat(c, "/etc/b.txt").startswith("<exit")  # deleted once reachable
    finally:
        ok(tectum("destroy", "-auto-approve", "-var", "extra=false", cwd=root))


def test_a_name_that_is_another_containers_id_prefix_never_reaches_it(
        tectum: Callable[..., Result], make_project: Callable[..., Path], store: PodmanStore,
        suffix: str) -> None:
    foreign = f"foreign-{suffix}"
    base = store.import_base()
    store.podman.run(["create", "--name", foreign, *store.podman.ulimit_args(), "--network",
                      "none", base, "sleep", "infinity"])
    store.podman.run(["start", foreign])
    ident = store.podman.inspect("container", [foreign])[foreign]["Id"]
    prefix = ident[:6]
    stack = ROLE_STACK.replace('name="web-SUFFIX"', f'name="{prefix}"').replace(
        "BASE", base)
    root = make_project(stack, {"tectum.toml": store.toml()})
    try:
        plan = ok(tectum("plan", cwd=root)).output
        assert "+ podman_container.web" in plan and "0 to replace" in plan, plan
        ok(tectum("apply", "-auto-approve", cwd=root))
        assert store.cat(foreign, "/etc/a.txt").startswith("<exit"), "wrote into another"
        assert store.cat(prefix, "/etc/a.txt") == "a\n"
        ok(tectum("destroy", "-auto-approve", cwd=root))
        assert foreign in store.containers() and prefix not in store.containers()
    finally:
        store.podman.run(["rm", "-f", "-t", "0", foreign], check=False)
        store.podman.run(["rm", "-f", "-t", "0", prefix], check=False)


def test_an_image_named_without_a_registry_is_built_once_and_a_derived_image_survives(
        tectum: Callable[..., Result], make_project: Callable[..., Path], store: PodmanStore,
        suffix: str) -> None:
    stack = f'''
from tectum.host import File
from tectum.podman import Image

def role(host):
    File("a", path="/etc/a.txt", content="a\\n")

Image("app", name="plain-{suffix}", base_tarball="{base_tarball()}", role=role)
'''
    root = make_project(stack, {"tectum.toml": store.toml()})
    derived = f"localhost/derived-{suffix}:1"
    try:
        ok(tectum("apply", "-auto-approve", cwd=root))
        assert "No changes" in ok(tectum("plan", cwd=root)).output
        # someone builds on tectum's image: it inherits the labels, not tectum's tag
        c = f"builder-{suffix}"
        store.podman.run(["create", "--name", c, *store.podman.ulimit_args(), "--network",
                          "none", f"localhost/plain-{suffix}:latest", "true"])
        store.podman.run(["commit", c, derived])
        store.podman.run(["rm", c])
        ok(tectum("destroy", "-auto-approve", cwd=root))
        assert derived in store.images()
        assert not [t for t in store.images() if t.startswith(f"localhost/plain-{suffix}:")]
    finally:
        store.podman.run(["rmi", derived], check=False)


def test_targeting_a_replaced_container_brings_its_files(
        tectum: Callable[..., Result], make_project: Callable[..., Path], store: PodmanStore,
        suffix: str) -> None:
    root = role_project(make_project, store, suffix)
    c = f"web-{suffix}"
    other = f"localhost/other-{suffix}:1"
    try:
        ok(tectum("apply", "-auto-approve", cwd=root))
        store.podman.run(["commit", c, other])
        ok(tectum("apply", "-auto-approve", "-var", f"image={other}", "-target",
                  "podman_container.web", cwd=root))
        assert store.cat(c, "/etc/b.txt") == "b\n"
        plan = ok(tectum("plan", "-var", f"image={other}", cwd=root)).output
        assert "No changes" in plan and "deleted" not in plan, plan
    finally:
        ok(tectum("destroy", "-auto-approve", "-var", f"image={other}", cwd=root))
        store.podman.run(["rmi", other], check=False)
