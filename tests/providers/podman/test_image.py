"""``podman_image`` on real podman (a storage of its own, tests/harness/images.py): a role baked
into an image under a content-addressed tag; an unchanged role never rebuilds, a changed one
always does; kept versions come back on rollback without a build; an image deleted by hand is
rebuilt; destroy removes every version tectum built; bad input is refused at plan time."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Result, ok
from tests.harness.images import PodmanStore, base_tarball

STACK = '''
from tectum import output, var
from tectum.host import Directory, File, User
from tectum.podman import Image

greeting = var("greeting", str, default="hello")

def app_role(host, greeting):
    www = Directory("www", path="/srv/www", mode="0755")
    File("index", path=f"{www.path}/index.html", content=f"<h1>{greeting}</h1>\\n",
         owner="app", depends_on=[])
    User("app", name="app", system=True)

image = Image("app", name="localhost/app-SUFFIX", base_tarball="TARBALL", role=app_role,
              role_args={"greeting": greeting}, keep=2, labels={"team": "web"})
output("tag", image.tag)
'''


def project(make_project: Callable[..., Path], store: PodmanStore, suffix: str,
            stack: str = STACK) -> Path:
    text = stack.replace("SUFFIX", suffix).replace("TARBALL", str(base_tarball()))
    return make_project(text, {"tectum.toml": store.toml()})


def podman_log(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def versions(store: PodmanStore, name: str) -> list[str]:
    return sorted(t for t in store.images() if t.startswith(f"{name}:"))


def test_role_is_baked_under_a_content_addressed_tag_and_never_rebuilt_unchanged(
        tectum: Callable[..., Result], make_project: Callable[..., Path],
        store: PodmanStore, suffix: str, tmp_path: Path) -> None:
    root = project(make_project, store, suffix)
    name = f"localhost/app-{suffix}"
    try:
        ok(tectum("apply", "-auto-approve", cwd=root))
        tags = versions(store, name)
        assert len(tags) == 2 and f"{name}:latest" in tags, tags
        ref = next(t for t in tags if not t.endswith(":latest"))
        out = store.podman.run(["run", "--rm", *store.podman.ulimit_args(), "--network", "none",
                                ref, "sh", "-c", "cat /srv/www/index.html; "
                                "stat -c %U /srv/www/index.html"], mutating=False)
        assert out.stdout.decode() == "<h1>hello</h1>\napp\n"
        labels = store.podman.inspect("image", [ref])[ref]["Labels"]
        assert labels["team"] == "web" and labels["tectum.image"] == name
        assert len(labels["tectum.role_hash"]) == 64
        assert not store.containers(), "the build container is removed"
        # unchanged: ten plans and an apply with no change and no mutating podman call
        log = tmp_path / "podman.log"
        for _ in range(10):
            plan = ok(tectum("plan", "-detailed-exitcode", cwd=root,
                             env={"TECTUM_COMMAND_LOG": str(log)}))
            assert "No changes" in plan.output
        ok(tectum("apply", "-auto-approve", cwd=root, env={"TECTUM_COMMAND_LOG": str(log)}))
        assert [e for e in podman_log(log) if e["mutating"]] == []
        assert versions(store, name) == tags
    finally:
        tectum("destroy", "-auto-approve", cwd=root)
    assert versions(store, name) == []
    # the base tectum imported from the tarball goes too (the store's own base stays)
    assert [t for t in store.images() if "tectum-base" in t] == []


def test_a_changed_role_rebuilds_keeps_versions_and_rollback_reuses_one(
        tectum: Callable[..., Result], make_project: Callable[..., Path],
        store: PodmanStore, suffix: str, tmp_path: Path) -> None:
    root = project(make_project, store, suffix)
    name = f"localhost/app-{suffix}"
    try:
        ok(tectum("apply", "-auto-approve", cwd=root))
        first = [t for t in versions(store, name) if not t.endswith(":latest")]
        plan = ok(tectum("plan", "-var", "greeting=bonjour", cwd=root))
        assert "podman_image.app" in plan.output and "tag:" in plan.output, plan.output
        assert "role_hash" in plan.output
        ok(tectum("apply", "-auto-approve", "-var", "greeting=bonjour", cwd=root))
        second = [t for t in versions(store, name) if not t.endswith(":latest")]
        assert len(second) == 2 and first[0] in second
        ok(tectum("apply", "-auto-approve", "-var", "greeting=hola", cwd=root))
        third = [t for t in versions(store, name) if not t.endswith(":latest")]
        assert len(third) == 2 and first[0] not in third, "keep = 2: the oldest goes"
        # back to the second version: it is still kept, so nothing is built
        log = tmp_path / "podman.log"
        history = ok(tectum("state", "history", cwd=root)).output
        assert history
        ok(tectum("apply", "-auto-approve", "-var", "greeting=bonjour", cwd=root,
                  env={"TECTUM_COMMAND_LOG": str(log)}))
        calls = [e["argv"] for e in podman_log(log) if e["mutating"]]
        assert not any(c[0] in ("commit", "run", "import") for c in calls), calls  # type: ignore[index]
        latest = store.podman.inspect("image", [f"{name}:latest"])[f"{name}:latest"]["Id"]
        second_tag = next(t for t in second if t not in first)
        assert store.podman.inspect("image", [second_tag])[second_tag]["Id"] == latest
    finally:
        tectum("destroy", "-auto-approve", cwd=root)
    assert versions(store, name) == []


def test_an_image_deleted_by_hand_is_rebuilt_as_drift(
        tectum: Callable[..., Result], make_project: Callable[..., Path],
        store: PodmanStore, suffix: str) -> None:
    root = project(make_project, store, suffix)
    name = f"localhost/app-{suffix}"
    try:
        ok(tectum("apply", "-auto-approve", cwd=root))
        store.podman.run(["rmi", *versions(store, name)])
        plan = ok(tectum("plan", cwd=root))
        assert "podman_image.app" in plan.output and "deleted" in plan.output, plan.output
        ok(tectum("apply", "-auto-approve", cwd=root))
        assert len(versions(store, name)) == 2
        assert "No changes" in ok(tectum("plan", cwd=root)).output
    finally:
        tectum("destroy", "-auto-approve", cwd=root)


@pytest.mark.parametrize("bad, says", [
    ('labels={"x": "a\\nb"}', "one line"),
    ('labels={"tectum.image": "x"}', "tectum's own"),
    ('base="--privileged"', "not an image reference"),
])
def test_bad_input_is_refused_at_plan_time(
        tectum: Callable[..., Result], make_project: Callable[..., Path],
        store: PodmanStore, suffix: str, bad: str, says: str) -> None:
    stack = f'''
from tectum.podman import Image
Image("app", name="localhost/bad-{suffix}", {bad}
      {', base_tarball="/nonexistent.tar"' if "base=" not in bad else ''})
'''
    root = make_project(stack, {"tectum.toml": store.toml()})
    result = tectum("plan", cwd=root)
    assert result.returncode == 1 and says in result.output, result.output
    assert "Traceback" not in result.output
    assert not any(suffix in t for t in store.images())


def test_a_base_image_that_is_not_there_is_a_plan_error(
        tectum: Callable[..., Result], make_project: Callable[..., Path],
        store: PodmanStore, suffix: str) -> None:
    stack = f'''
from tectum.podman import Image
Image("app", name="localhost/app-{suffix}", base="localhost/nothing-{suffix}:1")
'''
    root = make_project(stack, {"tectum.toml": store.toml()})
    result = tectum("plan", cwd=root)
    assert result.returncode == 1, result.output
    assert f"localhost/nothing-{suffix}:1 is not in podman's storage" in result.output
    assert "never pulls" in result.output


def test_an_image_built_on_another_image_of_the_stack(
        tectum: Callable[..., Result], make_project: Callable[..., Path],
        store: PodmanStore, suffix: str) -> None:
    stack = f'''
from tectum.host import File
from tectum.podman import Image

def base_role(host):
    File("a", path="/etc/a.txt", content="a\\n")

def app_role(host):
    File("b", path="/etc/b.txt", content="b\\n")

base = Image("base", name="localhost/base-{suffix}", base_tarball="{base_tarball()}",
             role=base_role)
Image("app", name="localhost/app-{suffix}", base=f"localhost/base-{suffix}:{{base.tag}}",
      role=app_role)
'''
    root = make_project(stack, {"tectum.toml": store.toml()})
    try:
        ok(tectum("apply", "-auto-approve", cwd=root))
        ref = f"localhost/app-{suffix}:latest"
        out = store.podman.run(["run", "--rm", *store.podman.ulimit_args(), "--network",
                                "none", ref, "cat", "/etc/a.txt", "/etc/b.txt"],
                               mutating=False)
        assert out.stdout == b"a\nb\n"
        assert "No changes" in ok(tectum("plan", cwd=root)).output
    finally:
        result = tectum("destroy", "-auto-approve", cwd=root)
    assert result.returncode == 0, result.output
    assert not any(suffix in t for t in store.images())


def test_podman_missing_or_a_runtime_that_cannot_start_names_the_setting(
        tectum: Callable[..., Result], make_project: Callable[..., Path],
        store: PodmanStore, suffix: str) -> None:
    stack = f'''
from tectum.podman import Container
Container("web", name="web-{suffix}", image="{store.import_base()}", network="none",
          command=["sleep", "infinity"])
'''
    missing = store.toml() + 'podman = "/nonexistent/podman"\n'
    root = make_project(stack, {"tectum.toml": missing.replace(
        "[providers.podman]\n", "[providers.podman]\n", 1)})
    result = tectum("plan", cwd=root)
    assert result.returncode == 1, result.output
    assert "podman is not installed here" in result.output
    assert "[providers.podman] podman" in result.output and "Traceback" not in result.output
    # a runtime that cannot start containers on this machine
    broken = store.toml().replace('runtime = "runc"', 'runtime = "/nonexistent/runtime"')
    root = make_project(stack, {"tectum.toml": broken}, name="broken")
    try:
        result = tectum("apply", "-auto-approve", cwd=root)
        assert result.returncode == 1, result.output
        assert "runtime" in result.output and "Traceback" not in result.output
    finally:
        tectum("destroy", "-auto-approve", cwd=root)
    assert f"web-{suffix}" not in store.containers()


def test_two_containers_with_one_name_are_refused(
        tectum: Callable[..., Result], make_project: Callable[..., Path],
        store: PodmanStore, suffix: str) -> None:
    stack = f'''
from tectum.podman import Container
for label in ("a", "b"):
    Container(label, name="same-{suffix}", image="{store.import_base()}", network="none")
'''
    root = make_project(stack, {"tectum.toml": store.toml()})
    result = tectum("plan", cwd=root)
    assert result.returncode == 1 and "Object managed twice" in result.output, result.output
    assert "podman_container.b" in result.output and "podman_container.a" in result.output


def test_a_built_image_carries_the_projects_git_revision(
        tectum: Callable[..., Result], make_project: Callable[..., Path],
        store: PodmanStore, suffix: str) -> None:
    import subprocess

    root = project(make_project, store, suffix)
    name = f"localhost/app-{suffix}"
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "stack"], check=True)
    revision = subprocess.run([*git, "describe", "--always", "--dirty"], check=True,
                              capture_output=True, text=True).stdout.strip()
    try:
        ok(tectum("apply", "-auto-approve", cwd=root))
        labels = store.podman.inspect("image", [f"{name}:latest"])[f"{name}:latest"]["Labels"]
        assert labels["tectum.revision"].startswith(revision.removesuffix("-dirty")), labels
        assert len(labels["tectum.role_hash"]) == 64
    finally:
        tectum("destroy", "-auto-approve", cwd=root)
