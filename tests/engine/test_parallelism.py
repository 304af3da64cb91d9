"""What ``--parallelism``, ``--forks`` and a provider's ``concurrency`` bound (issue 11 item 7):
``--parallelism N`` is Terraform's flag (at most N operations at once in the whole run),
``--forks N`` Ansible's (at most N hosts with an operation running), and
``[providers.host] concurrency`` (or ``TECTUM_PROVIDER_HOST_CONCURRENCY``) the operations at
once on one machine. Each command of these stacks records when it started and ended; the test
counts how many ran at the same time. Everything is written under ``tmp_path``."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

from tests.conftest import Result

SLEEP = 0.6


def _stack(world: Path, names: list[str], role_hosts: str | None = None) -> str:
    cmd = (f"echo start $(date +%s.%N) >> {world}/{{name}}.t; sleep {SLEEP}; "
           f"echo end $(date +%s.%N) >> {world}/{{name}}.t")
    if role_hosts is None:
        body = "\n".join(f'Command("{n}", command="{cmd.format(name=n)}")' for n in names)
        return "from tectum.host import Command\n" + body + "\n"
    return textwrap.dedent(f'''\
        from tectum import apply_role
        from tectum.host import Command

        def role(host):
            for n in {names!r}:
                name = f"{{host.name}}-{{n}}"
                Command(n, command="{cmd}".replace("{{name}}", name))

        apply_role(role, "{role_hosts}")
        ''')


def _intervals(world: Path) -> dict[str, tuple[float, float]]:
    out = {}
    for f in world.glob("*.t"):
        marks = dict(line.split() for line in f.read_text().splitlines())
        out[f.stem] = (float(marks["start"]), float(marks["end"]))
    return out


def _most_at_once(spans: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    now = most = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def _apply(tectum: Callable[..., Result], root: Path, *args: str,
           env: dict[str, str] | None = None) -> None:
    res = tectum("apply", "--auto-approve", *args, cwd=root, env=env)
    assert res.returncode == 0, res.output


def _project(tmp_path: Path, stack: str, inventory: str | None = None,
             toml: str | None = None) -> tuple[Path, Path]:
    root, world = tmp_path / "proj", tmp_path / "world"
    root.mkdir()
    world.mkdir()
    (root / "stack.py").write_text(stack.replace("{W}", str(world)))
    if inventory:
        (root / "inventory.toml").write_text(inventory)
    if toml:
        (root / "tectum.toml").write_text(toml)
    return root, world


NAMES = ["a", "b", "c", "d"]


TWO_HOSTS = ('[hosts.one]\nconnector = "local"\n\n[hosts.two]\nconnector = "local"\n\n'
             '[groups.both]\nhosts = ["one", "two"]\n')


def test_parallelism_bounds_operations_in_the_whole_run(
        tmp_path: Path, tectum: Callable[..., Result]) -> None:
    """Across hosts too: two hosts and ``--parallelism 1`` run one operation at a time (it
    used to mean one per host, so two ran at once)."""
    root, world = _project(tmp_path, _stack(tmp_path / "world", ["a", "b"], "both"),
                           TWO_HOSTS)
    _apply(tectum, root, "--parallelism", "1")
    spans = _intervals(world)
    assert sorted(spans) == ["one-a", "one-b", "two-a", "two-b"]
    assert _most_at_once(list(spans.values())) == 1


def test_default_runs_independent_operations_together(
        tmp_path: Path, tectum: Callable[..., Result]) -> None:
    root, world = _project(tmp_path, _stack(tmp_path / "world", NAMES))
    _apply(tectum, root)
    assert _most_at_once(list(_intervals(world).values())) >= 2


def test_provider_concurrency_bounds_one_machine(
        tmp_path: Path, tectum: Callable[..., Result]) -> None:
    """The host provider's ``concurrency``, from tectum.toml or its environment variable
    (which wins), bounds what runs at once on this machine whatever ``--parallelism`` is."""
    root, world = _project(tmp_path, _stack(tmp_path / "world", NAMES),
                           toml="[providers.host]\nconcurrency = 2\n")
    _apply(tectum, root, "--parallelism", "10")
    assert _most_at_once(list(_intervals(world).values())) <= 2
    for f in world.glob("*.t"):
        f.unlink()
    (root / "stack.py").write_text(_stack(world, ["e", "f", "g", "h"]))
    _apply(tectum, root, "--parallelism", "10",
           env={"TECTUM_PROVIDER_HOST_CONCURRENCY": "1"})
    assert _most_at_once(list(_intervals(world).values())) == 1


def test_forks_bounds_hosts_worked_at_once(
        tmp_path: Path, tectum: Callable[..., Result]) -> None:
    """Two inventory hosts (both this machine, ``connector = "local"``): with ``--forks 1``
    no operation of one runs while an operation of the other does."""
    root, world = _project(tmp_path, _stack(tmp_path / "world", ["a", "b"], "both"),
                           TWO_HOSTS)
    _apply(tectum, root, "--forks", "1")
    spans = _intervals(world)
    assert sorted(spans) == ["one-a", "one-b", "two-a", "two-b"]
    for a in ("one-a", "one-b"):
        for b in ("two-a", "two-b"):
            assert spans[a][1] <= spans[b][0] or spans[b][1] <= spans[a][0], spans


def test_bad_provider_setting_is_a_diagnostic(
        tmp_path: Path, tectum: Callable[..., Result]) -> None:
    root, _ = _project(tmp_path, _stack(tmp_path / "world", ["a"]),
                       toml="[providers.host]\nconcurrency = \"many\"\n")
    res = tectum("plan", cwd=root)
    assert res.returncode == 1
    assert "Invalid provider settings" in res.stderr and "concurrency" in res.stderr
    assert "Traceback" not in res.output
    (root / "tectum.toml").write_text("[providers.nosuch]\nx = 1\n")
    res = tectum("plan", cwd=root)
    assert res.returncode == 1 and "Unknown provider" in res.stderr, res.output
    assert "Traceback" not in res.output
