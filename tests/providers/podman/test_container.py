"""``podman_container`` against the real podman of this machine (a storage of the tests' own,
``tests/harness/images.py``): the type's hooks directly, and the whole engine through the CLI.

Every container is named with the test's ``suffix`` and removed afterwards. Containers run a
shell that exits on SIGTERM (``sleep infinity`` as PID 1 would make every stop wait 10 s).
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tectum.plans.plan import Action, ResourceChange
from tectum.providers.base import ApplyError, ReadItem
from tectum.providers.podman.container import TEMP_SUFFIX, ContainerType
from tests.conftest import Result
from tests.harness.images import PodmanStore

#: a command that runs until stopped and stops at once on SIGTERM
LOOP = ["sh", "-c", "trap 'exit 0' TERM; sleep infinity & wait"]

rt = ContainerType()


def sh(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False,
                          stdin=subprocess.DEVNULL)


class Box:
    """The type driven as the engine drives it, on the store's podman; removes every
    container it was told about."""

    def __init__(self, store: PodmanStore) -> None:
        self.store = store
        self.podman = store.podman
        self.names: list[str] = []

    def p(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = sh(self.podman.argv(list(args)))
        if check:
            assert proc.returncode == 0, proc.stderr
        return proc

    def prep(self, **attrs: Any) -> dict[str, Any]:
        self.names.append(attrs["name"])
        return rt.prepare(attrs, ".")

    def read(self, desired: dict[str, Any] | None,
             prior: dict[str, Any] | None = None) -> dict[str, Any] | None:
        (found,) = rt.read(self.podman, [ReadItem(desired, prior)])
        return found

    def plan(self, desired: dict[str, Any], prior: dict[str, Any] | None
             ) -> ResourceChange:
        obs = self.read(desired, prior)
        action, changes = rt.plan(desired, obs, prior)
        return ResourceChange(f"podman_container.{desired['name']}", rt.name, action,
                              rt.stored(obs) if obs is not None else None, desired, changes,
                              prior=prior)

    def converge(self, desired: dict[str, Any], prior: dict[str, Any] | None = None
                 ) -> dict[str, Any]:
        """Plan and apply; then the plan must be a no-op."""
        change = self.plan(desired, prior)
        record = rt.apply(self.podman, change) if change.action is not Action.NOOP else prior
        assert record is not None
        again = self.plan(desired, record)
        assert again.action is Action.NOOP and not again.changes, again.changes
        return record

    def delete(self, record: dict[str, Any]) -> None:
        change = ResourceChange("podman_container.x", rt.name, Action.DELETE, record, None,
                                prior=record)
        assert rt.apply(self.podman, change) is None

    def running(self, name: str) -> bool:
        proc = self.p("container", "inspect", "--format", "{{.State.Running}}", name,
                      check=False)
        return proc.stdout.strip() == "true"

    def close(self) -> None:
        names = [n for name in self.names for n in (name, name + TEMP_SUFFIX)]
        if names:
            self.p("rm", "-f", "-i", "-t", "0", *names, check=False)


@pytest.fixture
def box(store: PodmanStore) -> Iterator[Box]:
    made = Box(store)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def committed(store: PodmanStore, suffix: str) -> Iterator[str]:
    """A second image: the base with one more file (``podman commit``); its id."""
    name = f"tectum-commit-{suffix}"
    run = sh(store.podman.argv(["run", "--name", name, *store.podman.ulimit_args(),
                                "--network", "none", store.import_base(), "touch", "/marker"]))
    assert run.returncode == 0, run.stderr
    made = sh(store.podman.argv(["commit", "-q", name, f"localhost/tectum-second:{suffix}"]))
    sh(store.podman.argv(["rm", "-f", name]))
    assert made.returncode == 0, made.stderr
    yield made.stdout.strip()
    sh(store.podman.argv(["rmi", "-f", f"localhost/tectum-second:{suffix}"]))


# -- configuration ---------------------------------------------------------------------------

@pytest.mark.parametrize("attrs, words", [
    ({"name": "-rm"}, "is not"),
    ({"name": "a b"}, "is not"),
    ({"name": "x" + TEMP_SUFFIX}, "replacements"),
    ({"image": "--privileged"}, "starts with '-'"),
    ({"image": "img\nx"}, "line break"),
    ({"labels": {"-x": "1"}}, "starts with '-'"),
    ({"labels": {"a": "b\0"}}, "NUL"),
    ({"labels": {"tectum.managed": "no"}}, "tectum's own"),
    ({"env": {"1BAD": "x"}}, "environment variable name"),
    ({"env": {"A-B": "x"}}, "environment variable name"),
    ({"env": {"OK": "two\nlines"}}, "line break"),
    ({"volumes": ["data"]}, "expected"),
    ({"volumes": ["rel/path:/x"]}, "no volume name"),
    ({"volumes": ["data:/x:rx"]}, "expected"),
    ({"network": "slirp4netns"}, "network"),
    ({"restart_policy": "sometimes"}, "restart_policy"),
    ({"ulimits": {"nofile": "lots"}}, "SOFT:HARD"),
    ({"health_check": {"command": []}}, "health_check command"),
    ({"health_check": {"command": "[x]"}}, "JSON"),
    ({"health_check": {"command": "true", "every": 3}}, "unknown key"),
])
def test_check_refuses_what_podman_would_misread(attrs: dict[str, Any], words: str) -> None:
    full = {"name": "ok", "image": "localhost/x:1", **attrs}
    problems = rt.check(full)
    assert any(words in p for p in problems), problems
    with pytest.raises(ValueError, match="."):
        rt.prepare(full, ".")


def test_prepare_fills_defaults_and_canonical_forms() -> None:
    got = rt.prepare({"name": "web", "image": "img:1", "volumes": ["/srv//data/:/d:rw",
                                                                    "data:/v:ro"],
                      "ulimits": {"nofile": 4096}, "health_check": {"command": ["true"]}},
                     ".")
    assert got["volumes"] == ["/srv/data:/d", "data:/v:ro"]
    assert got["ulimits"] == {"nofile": "4096:4096"}
    assert got["health_check"] == {"command": ["true"], "interval": 5, "retries": 3}
    assert (got["network"], got["restart_policy"], got["running"], got["env"],
            got["labels"], got["create_before_destroy"]) == ("bridge", "no", True, {}, {},
                                                             False)
    assert rt.implicit_needs(got) == [[("image", "img:1")], [("volume", "data")]]
    assert rt.journal_identity({**got, "id": "abc"}) == {"name": "web", "id": "abc"}
    assert rt.delete_summary(got) == "stops and removes the container"


# -- the type on real podman -------------------------------------------------------------------

def test_create_reads_back_exactly_and_reads_are_batched(box: Box, store: PodmanStore,
                                                         suffix: str, tmp_path: Path) -> None:
    base = store.import_base()
    (tmp_path / "conf").mkdir()
    full = box.prep(name=f"full-{suffix}", image=base, command=LOOP,
                    env={"GREETING": "hello world", "EMPTY": "", "EQ": "a=b # not a comment"},
                    network="none", volumes=[f"vol-{suffix}:/data", f"{tmp_path}/conf:/conf:ro"],
                    ulimits={"nofile": "2048:4096"}, restart_policy="on-failure:2",
                    labels={"app": "web", "tier": "front"})
    record = box.converge(full)
    assert record["id"] and record["image_id"] and record["running"] is True
    assert record["env"] == full["env"] and record["labels"] == full["labels"]
    assert record["volumes"] == sorted(full["volumes"])
    assert record["ulimits"] == {"nofile": "2048:4096"}
    limits = box.p("exec", full["name"], "cat", "/proc/1/limits").stdout
    assert "Max open files            2048                 4096" in limits, limits
    assert "Max processes             4096                 4096" in limits  # (the default)
    env = box.p("exec", full["name"], "printenv", "EQ").stdout
    assert env == "a=b # not a comment\n"

    # the default network (bridge) works here with runc and cgroupfs
    plain = box.prep(name=f"plain-{suffix}", image=base, command=LOOP)
    stopped = box.prep(name=f"stopped-{suffix}", image=base, command=LOOP, running=False,
                       network="host")
    records = [box.converge(plain), box.converge(stopped)]
    assert records[0]["network"] == "bridge" and box.running(plain["name"])
    assert records[1]["running"] is False and not box.running(stopped["name"])
    devices = box.p("exec", plain["name"], "cat", "/proc/net/dev").stdout
    assert "eth0" in devices

    # three containers read in two podman calls, and a read never mutates
    calls, log = box.podman.calls, len(box.podman.log)
    found = rt.read(box.podman, [ReadItem(full, record), ReadItem(plain, None),
                                 ReadItem(None, records[1])])
    assert box.podman.calls - calls == 2
    assert not [e for e in box.podman.log[log:] if e["mutating"]]
    assert [f is not None and f["name"] for f in found] == [
        full["name"], plain["name"], stopped["name"]]

    # import by name gives what state holds (the image by its id: no tag is known), and
    # the configuration over it plans nothing
    imported = box.read(None, rt.import_item(full["name"]).prior)
    assert imported is not None and rt.stored(imported) == {
        **record, "image": record["image_id"]}
    assert box.plan(full, rt.stored(imported)).action is Action.NOOP

    box.delete(record)
    assert box.read(full, record) is None
    box.delete(record)  # (deleting what is gone is fine)
    box.p("volume", "rm", "-f", f"vol-{suffix}")


def test_drift_stopped_removed_and_recreated_by_hand(box: Box, store: PodmanStore,
                                                     suffix: str) -> None:
    desired = box.prep(name=f"drift-{suffix}", image=store.import_base(), command=LOOP,
                       env={"MODE": "one"}, network="none")
    name = desired["name"]
    record = box.converge(desired)

    box.p("stop", "-t", "0", name)
    change = box.plan(desired, record)
    assert change.action is Action.UPDATE
    assert [(c.name, c.before, c.after) for c in change.changes] == [("running", False, True)]
    record = box.converge(desired, rt.apply(box.podman, change))
    assert box.running(name)

    # recreated by hand with another environment: the plan replaces it
    box.p("rm", "-f", "-t", "0", name)
    box.p("run", "-d", "--name", name, *box.podman.ulimit_args(), "--network", "none",
          "--env", "MODE=one", "--env", "EXTRA=by-hand", store.import_base(), *LOOP)
    change = box.plan(desired, record)
    assert change.action is Action.REPLACE
    assert [(c.name, c.before, c.force_new) for c in change.changes] == [
        ("env", {"MODE": "one", "EXTRA": "by-hand"}, True)]
    record = box.converge(desired, rt.apply(box.podman, change))
    assert "EXTRA" not in box.p("exec", name, "env").stdout

    # removed by hand: created again
    box.p("rm", "-f", "-t", "0", name)
    assert box.plan(desired, record).action is Action.CREATE
    record = box.converge(desired, record)

    # running = false stops it in place (same container)
    stop = {**desired, "running": False}
    change = box.plan(stop, record)
    assert change.action is Action.UPDATE
    new = rt.apply(box.podman, change)
    assert new is not None and new["id"] == record["id"] and not box.running(name)
    box.delete(new)


def test_images_are_compared_by_id(box: Box, store: PodmanStore, suffix: str,
                                   committed: str) -> None:
    base = store.import_base()
    desired = box.prep(name=f"img-{suffix}", image=base, command=LOOP, network="none")
    record = box.converge(desired)
    base_id = record["image_id"]
    assert record["image"] == base

    # the same image by its id: nothing to do
    by_id = {**desired, "image": base_id}
    assert box.plan(by_id, record).action is Action.NOOP

    # another image: replaced, and the plan names the old image id
    other = {**desired, "image": committed}
    change = box.plan(other, record)
    assert change.action is Action.REPLACE
    assert [(c.name, c.before, c.after) for c in change.changes] == [("image", base_id, committed)]
    record = box.converge(other, rt.apply(box.podman, change))
    assert record["image_id"].startswith(committed)
    box.p("exec", desired["name"], "test", "-e", "/marker")

    # a tag moved to another image replaces the container that runs the old one
    tag = f"localhost/tectum-moving:{suffix}"
    box.p("tag", committed, tag)
    try:
        moving = {**desired, "image": tag}
        assert box.plan(moving, record).action is Action.NOOP
        box.p("tag", base, tag)
        assert box.plan(moving, record).action is Action.REPLACE
    finally:
        box.p("rmi", tag, check=False)

    # an image that is not there: missing() names it with the key a podman_image offers
    gone = {**desired, "image": f"localhost/nowhere:{suffix}"}
    box.read(gone, record)
    (need,) = rt.missing(box.podman, [ReadItem(gone, record)])
    assert [key for key, _ in need] == [("image", gone["image"])]
    assert "is not in podman's storage" in need[0][1]
    assert rt.missing(box.podman, [ReadItem(desired, record)]) == [[]]
    box.delete(record)


def test_a_command_that_exits_at_once_fails_with_its_logs(box: Box, store: PodmanStore,
                                                          suffix: str) -> None:
    desired = box.prep(name=f"dies-{suffix}", image=store.import_base(), network="none",
                       command=["sh", "-c", "echo starting up; echo cannot open config >&2; "
                                            "exit 3"])
    change = box.plan(desired, None)
    with pytest.raises(ApplyError) as err:
        rt.apply(box.podman, change)
    text = str(err.value)
    assert "exited right after it started" in text and "exit code 3" in text
    assert "starting up" in text and "cannot open config" in text
    assert box.read(desired) is None  # (what failed is not left behind)


def test_health_check_waits_and_a_failing_one_fails_with_logs(box: Box, store: PodmanStore,
                                                             suffix: str) -> None:
    slow = box.prep(name=f"slow-{suffix}", image=store.import_base(), network="none",
                    command=["sh", "-c", "trap 'exit 0' TERM; sleep 2; touch /tmp/ready; "
                                         "sleep infinity & wait"],
                    health_check={"command": ["test", "-e", "/tmp/ready"], "interval": 1,
                                  "retries": 3})
    started = time.monotonic()
    record = box.converge(slow)
    assert time.monotonic() - started >= 1.5  # (it waited for the check to pass)
    assert record["health_check"] == slow["health_check"]
    health = box.p("inspect", "--format", "{{.State.Health.Status}}", slow["name"]).stdout
    assert health.strip() == "healthy"

    shell = box.prep(name=f"shell-{suffix}", image=store.import_base(), network="none",
                     command=LOOP, health_check={"command": "test -d /tmp && true",
                                                 "interval": 2, "retries": 1})
    assert box.converge(shell)["health_check"]["command"] == "test -d /tmp && true"

    bad = box.prep(name=f"sick-{suffix}", image=store.import_base(), network="none",
                   command=["sh", "-c", "trap 'exit 0' TERM; echo sick service booting; "
                                        "sleep infinity & wait"],
                   health_check={"command": ["test", "-e", "/nonexistent"], "interval": 1,
                                 "retries": 1})
    with pytest.raises(ApplyError) as err:
        rt.apply(box.podman, box.plan(bad, None))
    assert "did not pass its health check" in str(err.value)
    assert "sick service booting" in str(err.value)
    assert box.read(bad) is None


def test_create_before_destroy_keeps_a_container_running(box: Box, store: PodmanStore,
                                                         suffix: str, committed: str) -> None:
    label = f"cbd-{suffix}"
    desired = box.prep(name=f"cbd-{suffix}", image=store.import_base(), network="none",
                       command=LOOP, labels={"app": label}, create_before_destroy=True,
                       health_check={"command": ["true"], "interval": 1, "retries": 2})
    record = box.converge(desired)
    seen: list[int] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            proc = sh(box.podman.argv(["ps", "--filter", f"label=app={label}", "--format",
                                       "{{.Names}}"]))
            if proc.returncode == 0:
                seen.append(len(proc.stdout.split()))

    watcher = threading.Thread(target=poll)
    watcher.start()
    try:
        time.sleep(0.5)
        new = {**desired, "image": committed}
        change = box.plan(new, record)
        assert change.action is Action.REPLACE
        replaced = rt.apply(box.podman, change)
        time.sleep(0.5)
    finally:
        stop.set()
        watcher.join()
    assert replaced is not None and replaced["id"] != record["id"]
    assert len(seen) > 5 and min(seen) >= 1 and max(seen) == 2, seen
    assert box.converge(new, replaced)["name"] == desired["name"]
    assert box.p("ps", "-a", "--format", "{{.Names}}").stdout.split().count(
        desired["name"] + TEMP_SUFFIX) == 0

    # without it: the old one goes first
    plain = {**new, "create_before_destroy": False, "image": store.import_base()}
    assert box.plan(plain, replaced).action is Action.REPLACE
    box.converge(plain, rt.apply(box.podman, box.plan(plain, replaced)))


def test_sweep_removes_what_a_killed_replace_left(box: Box, store: PodmanStore,
                                                  suffix: str) -> None:
    """The temporary container of a killed create_before_destroy replace is removed: the
    plan made after the kill (before the sweep) already decided what NAME needs."""
    base = store.import_base()
    name = f"swept-{suffix}"
    box.names.append(name)
    temp = name + TEMP_SUFFIX
    limits = box.podman.ulimit_args()
    for old_there in (False, True):
        if old_there:
            box.p("create", "--name", name, *limits, "--network", "none", base, *LOOP)
        box.p("create", "--name", temp, *limits, "--network", "none", base, *LOOP)
        rt.sweep_interrupted(box.podman, [{"name": name}])
        names = box.p("ps", "-a", "--format", "{{.Names}}").stdout.split()
        assert temp not in names
        assert (name in names) is old_there


def test_a_network_namespace_path(box: Box, store: PodmanStore, suffix: str) -> None:
    ns = f"tectum-ctr-{suffix}"
    made = sh(["ip", "netns", "add", ns])
    if made.returncode != 0:
        pytest.skip(f"ip netns add: {made.stderr.strip()}")
    try:
        desired = box.prep(name=f"netns-{suffix}", image=store.import_base(), command=LOOP,
                           network=f"/run/netns/{ns}")
        record = box.converge(desired)
        assert record["network"] == f"/run/netns/{ns}"
        box.delete(record)
    finally:
        sh(["ip", "netns", "delete", ns])


# -- through the engine and the CLI ---------------------------------------------------------------

STACK = """\
from tectum.podman import Container
from tectum.random import Password

pw = Password("pw", length=24, special=False)
Container("web", name="{name}", image="{image}", command={command!r},
          env={{"MODE": "{mode}", "API_TOKEN": pw.result}}, labels={{"app": "{name}"}},
          create_before_destroy={cbd})
"""


def _stack(root: Path, **values: Any) -> None:
    (root / "stack.py").write_text(STACK.format(command=LOOP, **values))


def _log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    path.unlink()
    return entries


def test_the_cli_creates_keeps_repairs_replaces_and_destroys(
        store: PodmanStore, suffix: str, tmp_path: Path, make_project: Callable[..., Path],
        tectum: Callable[..., Result], committed: str) -> None:
    name = f"cli-{suffix}"
    base = store.import_base()
    root = make_project("", files={"tectum.toml": store.toml()})
    log = tmp_path / "commands.jsonl"
    env = {"TECTUM_COMMAND_LOG": str(log)}
    podman = store.podman

    def p(*args: str) -> str:
        proc = sh(podman.argv(list(args)))
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    values = {"name": name, "image": base, "mode": "one", "cbd": False}
    _stack(root, **values)
    try:
        planned = tectum("plan", cwd=root, env=env)
        assert planned.returncode == 0, planned.output
        assert "podman_container.web" in planned.stdout and "2 to add" in planned.stdout
        applied = tectum("apply", "-auto-approve", cwd=root, env=env)
        assert applied.returncode == 0, applied.output
        secret = p("exec", name, "printenv", "API_TOKEN").strip()
        assert len(secret) == 24
        assert p("exec", name, "printenv", "MODE").strip() == "one"

        # several plans in a row are no-ops and mutate nothing
        _log(log)
        for _ in range(3):
            noop = tectum("plan", "-detailed-exitcode", cwd=root, env=env)
            assert noop.returncode == 0, noop.output
        entries = _log(log)
        assert entries and not [e for e in entries if e["mutating"]]
        assert max(sum(1 for e in entries if e["argv"][:2] == [kind, "inspect"])
                   for kind in ("container", "image")) <= 3  # (one per plan and kind)

        # stopped by hand: the drift is shown and repaired
        p("stop", "-t", "0", name)
        drift = tectum("plan", "-detailed-exitcode", cwd=root, env=env)
        assert drift.returncode == 2 and "running" in drift.stdout, drift.output
        assert tectum("apply", "-auto-approve", cwd=root, env=env).returncode == 0
        assert p("inspect", "--format", "{{.State.Running}}", name).strip() == "true"

        # recreated by hand with another environment: replaced with the configured one
        p("rm", "-f", "-t", "0", name)
        p("run", "-d", "--name", name, *podman.ulimit_args(), "--env", "MODE=manual", base,
          *LOOP)
        drift = tectum("plan", "-detailed-exitcode", cwd=root, env=env)
        assert drift.returncode == 2 and "env" in drift.stdout, drift.output
        assert "replace" in drift.stdout and secret not in drift.output, drift.output
        assert tectum("apply", "-auto-approve", cwd=root, env=env).returncode == 0
        assert p("exec", name, "printenv", "MODE").strip() == "one"
        assert tectum("plan", "-detailed-exitcode", cwd=root, env=env).returncode == 0

        # a configured change replaces it; so does another image
        values["mode"] = "two"
        _stack(root, **values)
        changed = tectum("plan", "-detailed-exitcode", cwd=root, env=env)
        assert changed.returncode == 2 and "1 to replace" in changed.stdout, changed.output
        # (env holds a secret: the engine masks the whole attribute)
        assert "env: (sensitive value)" in changed.stdout and secret not in changed.output
        assert tectum("apply", "-auto-approve", cwd=root, env=env).returncode == 0
        assert p("exec", name, "printenv", "MODE").strip() == "two"
        values.update(image=committed, cbd=True)
        _stack(root, **values)
        assert tectum("apply", "-auto-approve", cwd=root, env=env).returncode == 0
        p("exec", name, "test", "-e", "/marker")
        assert p("exec", name, "printenv", "API_TOKEN").strip() == secret
        assert tectum("plan", "-detailed-exitcode", cwd=root, env=env).returncode == 0

        # the secret never reached a podman command line nor any output
        everything = [json.dumps(e) for e in _log(log)]
        assert everything and not [e for e in everything if secret in e]
        assert any("--env" in e for e in everything)  # (the name only: podman reads the value)
        created = p("inspect", "--format", "{{json .Config.CreateCommand}}", name)
        assert secret not in created
        shown = tectum("plan", cwd=root, env=env)
        assert secret not in shown.output

        destroyed = tectum("destroy", "-auto-approve", cwd=root, env=env)
        assert destroyed.returncode == 0, destroyed.output
        assert name not in p("ps", "-a", "--format", "{{.Names}}").split()
    finally:
        sh(podman.argv(["rm", "-f", "-i", "-t", "0", name, name + TEMP_SUFFIX]))


def test_the_cli_reports_an_image_that_is_not_there(
        store: PodmanStore, suffix: str, make_project: Callable[..., Path],
        tectum: Callable[..., Result]) -> None:
    root = make_project(
        "from tectum.podman import Container\n"
        f"Container('web', name='gone-{suffix}', image='localhost/nowhere:{suffix}')\n",
        files={"tectum.toml": store.toml()})
    planned = tectum("plan", cwd=root)
    assert planned.returncode == 1, planned.output
    assert f"localhost/nowhere:{suffix}" in planned.output
    assert "is not in podman's storage" in planned.output
    assert "Traceback" not in planned.output
