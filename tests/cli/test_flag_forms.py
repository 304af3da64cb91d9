"""Terraform's CLI habit (issue 12 item 5): every long flag in the single-dash form
(``-auto-approve``, ``-json``, ``-lock-timeout=5s``) and the double-dash one (``--var``)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from tectum.cli.main import build_parser
from tests.conftest import Result


def _long_options(parser: argparse.ArgumentParser,
                  where: str = "tectum") -> list[tuple[str, tuple[str, ...]]]:
    out: list[tuple[str, tuple[str, ...]]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += _long_options(sub, f"{where} {name}")
            continue
        out.append((where, tuple(action.option_strings)))
    return out


def test_every_long_option_has_both_forms() -> None:
    for where, options in _long_options(build_parser()):
        for option in options:
            name = option.lstrip("-")
            if len(name) < 2:
                continue
            assert f"-{name}" in options and f"--{name}" in options, (where, options)


def test_single_and_double_dash_through_the_cli(
        tmp_path: Path, tectum: Callable[..., Result]) -> None:
    out = tmp_path / "out"
    (tmp_path / "stack.py").write_text(
        'from tectum import var\nfrom tectum.host import File\n'
        f'File("f", path="{out}", content=var("x", str, default="a"))\n')
    plan = tectum("plan", "-json", "-detailed-exitcode", cwd=tmp_path)
    assert plan.returncode == 2, plan.output
    changes = json.loads(plan.stdout)["resource_changes"]
    assert [(c["address"], c["action"]) for c in changes] == [("file.f", "create")]
    res = tectum("apply", "-auto-approve", "-var", "x=b", "-lock-timeout=5s", cwd=tmp_path)
    assert res.returncode == 0, res.output
    assert out.read_text() == "b"
    res = tectum("apply", "--auto-approve", "--var", "x=c", "--parallelism=3", cwd=tmp_path)
    assert res.returncode == 0, res.output
    assert out.read_text() == "c"
    res = tectum("plan", "-refresh=false", "-var", "x=c", "-detailed-exitcode", cwd=tmp_path)
    assert res.returncode == 0, res.output


def test_no_color_is_taken_before_and_after_the_command() -> None:
    """``terraform plan -no-color`` as well as ``tectum -no-color plan``; not giving it after
    the command keeps what was given before it."""
    parser = build_parser()
    for argv in (["-no-color", "plan"], ["plan", "-no-color"], ["plan", "--no-color"],
                 ["state", "list", "-no-color"], ["secrets", "init", "-no-color"]):
        assert parser.parse_args(argv).no_color is True, argv
    assert parser.parse_args(["plan"]).no_color is False
