"""What a resource needs on its host and the host does not have — an owner or group that is no
account there, a service not installed — is an error at **plan** time (read with the host's
other facts), unless the stack itself brings it: a declared ``User``/``Group`` of that name, or
(for a service) something it depends on that changes in the plan. Nothing is applied then."""

from __future__ import annotations

import secrets
from pathlib import Path

from tests.conftest import run_tectum


def _stack(tmp_path: Path, body: str) -> Path:
    (tmp_path / "stack.py").write_text(
        "from tectum.host import Command, Directory, File, Group, Service, User\n" + body)
    return tmp_path


def test_an_owner_and_group_that_are_no_accounts_fail_the_plan(tmp_path: Path) -> None:
    user, group = f"tectum-nouser-{secrets.token_hex(3)}", f"tectum-nogrp-{secrets.token_hex(3)}"
    root = _stack(tmp_path, f"File('a', path='{tmp_path}/a', content='x', owner={user!r},\n"
                            f"     group={group!r})\n"
                            f"Directory('d', path='{tmp_path}/d', owner='root', group='0')\n")
    result = run_tectum("apply", "-auto-approve", str(root))
    assert result.returncode == 1, result.output
    assert "Error: Missing on the host" in result.stderr
    assert f"at {root}/stack.py:2, in file.a" in result.stderr
    assert f"owner '{user}' is no user on this machine." in result.stderr
    assert f"group '{group}' is no group on this machine." in result.stderr
    assert "directory.d" not in result.stderr  # root and a numeric gid are fine
    assert not (tmp_path / "a").exists() and not (tmp_path / "d").exists()
    assert "Traceback" not in result.output


def test_accounts_the_stack_declares_are_not_missing(tmp_path: Path) -> None:
    user, group = f"tectum-u{secrets.token_hex(3)}", f"tectum-g{secrets.token_hex(3)}"
    root = _stack(tmp_path, f"Group('g', name={group!r})\n"
                            f"User('u', name={user!r}, group={group!r}, groups=[{group!r}])\n"
                            f"File('a', path='{tmp_path}/a', content='x', owner={user!r},\n"
                            f"     group={group!r})\n"
                            f"User('gone', name='tectum-absent-x', group='tectum-absent-g',\n"
                            f"     ensure='absent')\n")
    result = run_tectum("plan", str(root))  # a plan only: nothing is made
    assert result.returncode == 0, result.output
    assert "Plan: 3 to add" in result.stdout


def test_a_user_in_a_group_that_does_not_exist_fails_the_plan(tmp_path: Path) -> None:
    group = f"tectum-nogrp-{secrets.token_hex(3)}"
    root = _stack(tmp_path, f"User('u', name='tectum-u-{secrets.token_hex(3)}', "
                            f"groups=['root', {group!r}])\n")
    result = run_tectum("plan", str(root))
    assert result.returncode == 1, result.output
    assert f"groups '{group}' is no group on this machine." in result.stderr


def test_a_service_that_is_not_installed_fails_the_plan_unless_a_dependency_changes(
        tmp_path: Path) -> None:
    name = f"tectum-nosvc-{secrets.token_hex(3)}"
    root = _stack(tmp_path, f"Service('s', name={name!r}, running=True)\n"
                            f"Service('off', name={name + '-off'!r}, running=False)\n")
    result = run_tectum("plan", str(root))
    assert result.returncode == 1, result.output
    assert f"service '{name}' is not installed on this machine" in result.stderr
    assert "service.off" not in result.stderr  # nothing to run: nothing missing
    # a command it depends on (an installer) changes in the plan: it may bring the service
    root = _stack(tmp_path, f"inst = Command('install', command='true')\n"
                            f"Service('s', name={name!r}, running=True, depends_on=[inst])\n")
    result = run_tectum("plan", str(root))
    assert result.returncode == 0, result.output


def test_a_package_no_package_list_offers_fails_the_plan(tmp_path: Path) -> None:
    """Found at plan time with ``apt-cache policy`` in the read's round trip — asked only for
    packages about to be installed — unless the stack declares an apt repository on the host
    or the package asks for a cache refresh first."""
    name = f"tectum-no-such-pkg-{secrets.token_hex(3)}"
    root = _stack(tmp_path, f"from tectum.host import Package\n"
                            f"Package({name!r})\nPackage('bash')\n")
    result = run_tectum("plan", str(root))
    assert result.returncode == 1, result.output
    assert f"package '{name}' is in no package list of this machine" in result.stderr
    assert "package.bash" not in result.stderr
    for extra in (f"Package({name!r}, cache_valid_time=3600)\n",
                  f"Package({name!r})\nfrom tectum.host import AptRepository\n"
                  "AptRepository('extra', uris=['http://127.0.0.1:9/x'], suites=['stable'],"
                  " components=['main'])\n"):
        root = _stack(tmp_path, "from tectum.host import Package\n" + extra)
        result = run_tectum("plan", str(root))  # a plan only: nothing is made
        assert result.returncode == 0, result.output


def test_what_a_changing_dependency_may_bring_is_not_missing(tmp_path: Path) -> None:
    """A user a command adds, a group a package's install script makes, a service whose init
    script the stack writes (it depends on it automatically): the plan cannot know they will
    be there, so it does not refuse them (review findings)."""
    user, group = f"tectum-u{secrets.token_hex(3)}", f"tectum-g{secrets.token_hex(3)}"
    name = f"tectum-svc-{secrets.token_hex(3)}"
    root = _stack(tmp_path, f"add = Command('adduser', command='true')\n"
                            f"File('a', path='{tmp_path}/a', content='x', owner={user!r},\n"
                            f"     depends_on=[add])\n"
                            f"User('u', name={user + 'x'!r}, groups=[{group!r}], "
                            f"depends_on=[add])\n"
                            f"File('init', path='/etc/init.d/{name}', content='#!/bin/sh\\n',\n"
                            f"     mode='0755')\n"
                            f"Service('s', name={name!r}, running=True)\n")
    result = run_tectum("plan", str(root))  # a plan only: nothing is made
    assert result.returncode == 0, result.output
    graph = run_tectum("graph", str(root))
    assert '"service.s" -> "file.init"' in graph.stdout, graph.stdout
