"""``podman_volume`` through the CLI against real podman (a storage of the test session's own,
``tests/harness/images.py``). Every test names its volumes with a random suffix and removes
what it made."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tectum.providers.base import ReadItem
from tectum.providers.podman.volume import MANAGED_LABEL, VolumeType
from tests.conftest import Result, ok
from tests.harness.images import PodmanStore

Run = Callable[..., Result]


def stack(*volumes: str) -> str:
    """A stack declaring ``volumes`` (each a ``Volume(...)`` call's arguments)."""
    return "from tectum.podman import Volume\n" + "".join(
        f"Volume({v})\n" for v in volumes)


def inspect(store: PodmanStore, name: str) -> dict[str, Any] | None:
    """podman's own view of volume ``name`` (exact name), or None."""
    return store.podman.inspect("volume", [name]).get(name)


@pytest.fixture
def volumes(store: PodmanStore) -> Iterator[list[str]]:
    """Names of volumes a test makes (removed afterwards, whatever happened)."""
    made: list[str] = []
    yield made
    for name in made:
        if inspect(store, name) is not None:
            store.podman.run(["volume", "rm", "-f", "--", name], check=False)


def project(make_project: Callable[..., Path], store: PodmanStore, text: str) -> Path:
    return make_project(text, files={"tectum.toml": store.toml()})


def test_create_noop_drift_replace_and_destroy(
        store: PodmanStore, suffix: str, tectum: Run, make_project: Callable[..., Path],
        volumes: list[str]) -> None:
    name = f"data-{suffix}"
    volumes.append(name)
    root = project(make_project, store, stack(
        f'"data", name="{name}", labels={{"app": "web"}}, '
        'options={"type": "tmpfs", "device": "tmpfs"}'))

    planned = ok(tectum("plan", cwd=root))
    assert "podman_volume.data" in planned.stdout and "1 to add" in planned.stdout
    assert MANAGED_LABEL not in planned.stdout
    ok(tectum("apply", "-auto-approve", cwd=root))
    info = inspect(store, name)
    assert info is not None
    assert info["Labels"] == {"app": "web", MANAGED_LABEL: "true"}
    assert info["Options"] == {"type": "tmpfs", "device": "tmpfs"}
    assert info["Driver"] == "local"
    state = json.loads(ok(tectum("state", "pull", cwd=root)).stdout)
    (record,) = [r for r in state["resources"] if r["type"] == "podman_volume"]
    assert record["attributes"]["mountpoint"] == info["Mountpoint"]

    # nothing to do, and the managed label is no difference
    assert tectum("plan", "-detailed-exitcode", cwd=root).returncode == 0

    # removed by hand: drift, made again
    store.podman.run(["volume", "rm", "--", name])
    drifted = tectum("plan", "-detailed-exitcode", cwd=root)
    assert drifted.returncode == 2, drifted.output
    assert "1 to add" in drifted.stdout
    assert "deleted" in drifted.output.lower()
    ok(tectum("apply", "-auto-approve", cwd=root))
    assert inspect(store, name) is not None
    assert tectum("plan", "-detailed-exitcode", cwd=root).returncode == 0

    # labels changed: a volume cannot be changed, so it is replaced (its data goes)
    probe = Path(str(inspect(store, name)["Mountpoint"])) / "probe"  # type: ignore[index]
    probe.write_text("old data\n")
    (root / "stack.py").write_text(stack(
        f'"data", name="{name}", labels={{"app": "api"}}, '
        'options={"type": "tmpfs", "device": "tmpfs"}'))
    replaced = tectum("plan", "-detailed-exitcode", cwd=root)
    assert replaced.returncode == 2, replaced.output
    assert "1 to replace" in replaced.stdout and "labels forces replacement" in replaced.stdout
    ok(tectum("apply", "-auto-approve", cwd=root))
    info = inspect(store, name)
    assert info is not None and info["Labels"] == {"app": "api", MANAGED_LABEL: "true"}
    assert not probe.exists()
    assert tectum("plan", "-detailed-exitcode", cwd=root).returncode == 0

    # destroy removes it (and says its data goes)
    destroyed = ok(tectum("destroy", "-auto-approve", cwd=root))
    assert "deletes the volume's data" in destroyed.output, destroyed.output
    assert inspect(store, name) is None


def test_a_volume_in_use_is_not_deleted_and_the_failure_names_the_container(
        store: PodmanStore, suffix: str, tectum: Run, make_project: Callable[..., Path],
        volumes: list[str]) -> None:
    name, user = f"busy-{suffix}", f"user-of-busy-{suffix}"
    volumes.append(name)
    root = project(make_project, store, stack(f'"busy", name="{name}"'))
    ok(tectum("apply", "-auto-approve", cwd=root))
    store.podman.run(["create", "--name", user, "--network", "none",
                      *store.podman.ulimit_args(), "-v", f"{name}:/data", store.import_base(),
                      "true"])
    try:
        failed = tectum("destroy", "-auto-approve", cwd=root)
        assert failed.returncode == 1, failed.output
        assert f"volume {name} is in use by container(s) {user}" in failed.output
        assert f"podman rm {user}" in failed.output
        assert "Traceback" not in failed.output
        assert inspect(store, name) is not None  # (nothing forced: the container stays too)
        assert user in store.containers()
    finally:
        store.podman.run(["rm", "-f", "--", user], check=False)
    ok(tectum("destroy", "-auto-approve", cwd=root))
    assert inspect(store, name) is None


def test_a_volume_found_already_there_is_adopted_and_left_on_destroy(
        store: PodmanStore, suffix: str, tectum: Run, make_project: Callable[..., Path],
        volumes: list[str]) -> None:
    name = f"found-{suffix}"
    volumes.append(name)
    store.podman.run(["volume", "create", "--label", "owner=someone", "--", name])
    root = project(make_project, store, stack(
        f'"found", name="{name}", labels={{"owner": "someone"}}'))
    planned = tectum("plan", "-detailed-exitcode", cwd=root)
    assert planned.returncode == 2, planned.output  # it matches: adopted, nothing made
    assert "1 to adopt" in planned.stdout and "0 to add" in planned.stdout, planned.output
    assert "recorded in state as found" in planned.stdout
    ok(tectum("apply", "-auto-approve", cwd=root))
    assert tectum("plan", "-detailed-exitcode", cwd=root).returncode == 0
    state = json.loads(ok(tectum("state", "pull", cwd=root)).stdout)
    (record,) = [r for r in state["resources"] if r["type"] == "podman_volume"]
    assert record.get("origin") == "found", record
    destroyed = ok(tectum("destroy", "-auto-approve", cwd=root))
    assert "forget" in destroyed.output.lower(), destroyed.output
    info = inspect(store, name)
    assert info is not None and info["Labels"] == {"owner": "someone"}  # untouched


def test_bad_names_and_labels_are_refused_at_plan_time(
        store: PodmanStore, suffix: str, tectum: Run, make_project: Callable[..., Path],
        volumes: list[str]) -> None:
    for bad, words in ((f'"v", name="-rm-{suffix}"', "not a podman volume name"),
                       (f'"v", name="a b{suffix}"', "not a podman volume name"),
                       (f'"v", name="v{suffix}", labels={{"{MANAGED_LABEL}": "no"}}',
                        "set by tectum itself"),
                       (f'"v", name="v{suffix}", options={{"a=b": "c"}}', "no '='"),
                       (f'"v", name="v{suffix}", labels={{"n": 1}}', "are strings")):
        root = project(make_project, store, stack(bad))
        result = tectum("plan", cwd=root)
        assert result.returncode == 1, (bad, result.output)
        assert words in result.output, (bad, result.output)
    assert not [v for v in store.podman.json(["volume", "ls", "--format", "json"])
                if suffix in str(v.get("Name"))]


def test_read_is_one_batched_inspect_by_exact_name(store: PodmanStore, suffix: str,
                                                   volumes: list[str]) -> None:
    """One ``podman volume inspect`` for every volume; a missing name is not answered by
    another volume it is a prefix of (podman's own lookup would)."""
    long_name, short_name = f"prefix-{suffix}-long", f"prefix-{suffix}"
    volumes.append(long_name)
    store.podman.run(["volume", "create", "--", long_name])
    rt = VolumeType()
    items = [ReadItem(rt.prepare({"name": n}, "/"), None)
             for n in (long_name, short_name, f"none-{suffix}")]
    before = len(store.podman.log)
    found = rt.read(store.podman, items)
    calls = store.podman.log[before:]
    assert [c["argv"][:2] for c in calls] == [["volume", "inspect"]]  # type: ignore[index]
    assert found[0] is not None and found[0]["name"] == long_name
    assert found[1] is None and found[2] is None
