"""The hooks the host types offer the engine (issue 11: the engine names no resource type).

Each test pins what the engine did itself before providers were plug-ins: the identity two
resources may not share, implicit dependencies (Puppet's autorequire), values to mask, the
plan view's notes and the warnings shown before ``apply`` asks. The message texts are the ones
the CLI tests grep for.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from tectum.plans.plan import Action, ResourceChange
from tectum.providers.base import ReadItem
from tectum.providers.host.apt import PackageType
from tectum.providers.host.base import HostType
from tectum.providers.host.command import CommandType
from tectum.providers.host.connector import LocalConnector
from tectum.providers.host.files import DirectoryType, FileType, SymlinkType, ancestors
from tectum.providers.host.service import ServiceType
from tectum.providers.host.users import GroupType, UserType
from tectum.providers.registry import registry
from tectum.values import SECRET, SENSITIVE_VAR, token

UNKNOWN_PATH = "/srv/" + token("file.other", "path")


def change(rt: HostType, action: Action, *, prior: dict[str, Any] | None = None,
           after: dict[str, Any] | None = None) -> ResourceChange:
    return ResourceChange(address=f"{rt.name}.x", type=rt.name, action=action, before=prior,
                          after=after, changes=[], prior=prior)


# -- every host type -----------------------------------------------------------------------

def test_every_host_type_is_a_host_type() -> None:
    from tectum.providers.host.provider import HostProvider

    host_types = {n for n in registry.names() if registry.provider_of(n) == "host"}
    assert host_types == set(HostProvider.resource_types)
    assert {"file", "directory", "symlink", "package", "user", "group", "service",
            "command"} <= host_types
    for name in host_types:
        assert isinstance(registry.get(name), HostType), name


def test_read_takes_desired_else_prior(tmp_path: Path) -> None:
    """``read`` reads what finds each object: desired attributes, else the recorded ones (an
    object that left the configuration)."""
    there = tmp_path / "there"
    there.write_text("hi\n")
    conn = LocalConnector()
    got = FileType().read(conn, [
        ReadItem({"path": str(there), "content": "x"}, {"path": str(tmp_path / "old")}),
        ReadItem(None, {"path": str(there)}),
        ReadItem(None, {"path": str(tmp_path / "gone")}),
    ])
    digest = hashlib.sha256(b"hi\n").hexdigest()
    assert got[0] is not None and got[0]["content_sha256"] == digest
    assert got[1] is not None and got[1]["content_sha256"] == digest
    assert got[2] is None


def test_read_of_nothing_is_nothing() -> None:
    assert DirectoryType().read(LocalConnector(), []) == []


@pytest.mark.parametrize(("observed", "exists"), [
    ({"path": "/x", "content_sha256": "ab"}, True),
    ({"path": "/x", "_kind": "directory"}, False),
    ({"name": "tree", "ensure": "absent", "version": None}, False),
    ({"name": "tree", "ensure": "present", "version": "1"}, True),
    ({"name": "nginx", "running": True}, True),
])
def test_exists(observed: dict[str, Any], exists: bool) -> None:
    """What ``tectum import`` may bring under management: present, and of the declared kind."""
    assert FileType().exists(observed) is exists


def test_facts_default_asks_for_nothing() -> None:
    from tectum.providers.host.connector import FactRequest

    class Bare(HostType):
        name = "bare"
        schema = FileType.schema

        def read_objects(self, conn: Any, objects: Sequence[dict[str, Any]]
                         ) -> list[dict[str, Any] | None]:
            return [None for _ in objects]

        def apply(self, target: Any, change: ResourceChange) -> dict[str, Any] | None:
            return None

    assert Bare().facts([{"path": "/x"}]) == FactRequest()
    assert Bare().read(None, [ReadItem({"path": "/x"}, None)]) == [None]


# -- paths ---------------------------------------------------------------------------------

def test_paths_share_one_identity_namespace() -> None:
    """A file, a directory and a symlink at one path are one object (in normal form)."""
    keys = {rt.identity_key({"path": p}) for rt, p in (
        (FileType(), "/srv/www"), (DirectoryType(), "/srv/./www"),
        (SymlinkType(), "/srv//www"))}
    assert keys == {("path", "/srv/www")}
    assert PackageType().identity_key({"name": "tree"}) == ("package", "tree")


def test_ancestors_nearest_first_without_root() -> None:
    assert list(ancestors("/a/b/c")) == ["/a/b", "/a"]
    assert list(ancestors("/a/./b//c/")) == ["/a/b", "/a"]
    assert list(ancestors("/a")) == []


def test_directory_offers_its_path() -> None:
    rt = DirectoryType()
    assert rt.implicit_keys({"path": "/srv/www/"}) == [("dir", "/srv/www")]
    assert rt.implicit_keys({"path": UNKNOWN_PATH}) == []
    # a file offers itself to a service whose init script or unit file it is
    assert FileType().implicit_keys({"path": "/etc/init.d//x"}) == [("file", "/etc/init.d/x")]
    assert SymlinkType().implicit_keys({"path": "/srv/www"}) == []


@pytest.mark.parametrize("rt", [FileType(), DirectoryType(), SymlinkType()],
                         ids=lambda rt: rt.name)
def test_path_needs_nearest_directory(rt: HostType) -> None:
    assert rt.implicit_needs({"path": "/srv/www/site/index.html"}) == [
        [("dir", "/srv/www/site"), ("dir", "/srv/www"), ("dir", "/srv")]]
    assert rt.implicit_needs({"path": "/top"}) == []
    assert rt.implicit_needs({"path": UNKNOWN_PATH}) == []


def test_path_needs_owner_and_group() -> None:
    attrs = {"path": "/srv/a", "owner": "www", "group": "web"}
    assert FileType().implicit_needs(attrs) == [
        [("dir", "/srv")], [("user", "www")], [("group", "web")]]
    assert DirectoryType().implicit_needs({"path": UNKNOWN_PATH, "owner": "www"}) == [
        [("user", "www")]]


def test_path_sweep_interrupted_sweeps_the_paths() -> None:
    class Recorder:
        def __init__(self) -> None:
            self.swept: list[list[str]] = []

        def sweep_temp(self, paths: Sequence[str]) -> list[str]:
            self.swept.append(list(paths))
            return []

    conn: Any = Recorder()
    FileType().sweep_interrupted(conn, [{"path": "/srv/a"}, {"path": None}, {},
                                        {"path": "/srv/b"}])
    DirectoryType().sweep_interrupted(conn, [{"path": None}])  # nothing to sweep: no call
    assert conn.swept == [["/srv/a", "/srv/b"]]


def test_file_journal_identity_is_its_path() -> None:
    """What the journal keeps is what :meth:`sweep_interrupted` gets back after a crash."""
    assert FileType().journal_identity({"path": "/srv/a", "content": "x"}) == {"path": "/srv/a"}


# -- file: masking and the plan view ---------------------------------------------------------

def test_file_labels_and_text() -> None:
    rt = FileType()
    assert rt.label("content_sha256") == "content"
    assert rt.label("mode") == "mode"
    assert rt.labels == {"content_sha256": "content"}
    assert rt.text_attrs == frozenset({"content"})
    assert DirectoryType().label("content_sha256") == "content_sha256"


@pytest.mark.parametrize(("sensitive", "derived"), [
    ({"vars"}, {"content"}), ({"template"}, {"content"}), ({"mode"}, set()), (set(), set()),
])
def test_file_content_sensitive_with_template(sensitive: set[str], derived: set[str]) -> None:
    assert FileType().sensitive_derived(sensitive) == derived
    assert DirectoryType().sensitive_derived(sensitive) == set()


def test_file_masks_digest_of_sensitive_content() -> None:
    rt = FileType()
    attrs = {"path": "/x", "content": "pw", "content_sha256": "d1g"}
    assert rt.masked_values(attrs, {"content"}) == ["d1g"]
    assert rt.masked_values(attrs, {"mode"}) == []
    assert rt.masked_values({"path": "/x", "content_sha256": None}, {"content"}) == []


def test_file_masks_digest_of_found_secret() -> None:
    rt = FileType()
    found = {"path": "/x", "content_sha256": "d1g", "_content": b"key=hunter2\n\xff"}
    seen: list[str] = []

    def holds(text: str) -> bool:
        seen.append(text)
        return "hunter2" in text

    assert rt.masked_observed(found, holds) == ["d1g"]
    assert seen == ["key=hunter2\n\udcff"]  # (undecodable bytes kept: surrogateescape)
    assert rt.masked_observed(found, lambda text: False) == []
    assert rt.masked_observed({"path": "/x", "_kind": "directory"}, holds) == []
    assert DirectoryType().masked_observed(found, holds) == []


def test_file_display_old_content() -> None:
    rt = FileType()
    assert rt.display({"path": "/x", "_content": b"old\n"}) == {"before_content": b"old\n"}
    assert rt.display({"path": "/x", "_content": None}) == {"before_content": None}
    assert rt.display({"path": "/x", "_kind": "directory"}) == {}
    assert DirectoryType().display({"path": "/x"}) == {}


# -- warnings and notes ----------------------------------------------------------------------

def test_directory_delete_notes() -> None:
    rt = DirectoryType()
    assert rt.delete_summary({"path": "/srv"}) == "with everything in it"
    assert rt.warnings(change(rt, Action.DELETE, prior={"path": "/srv"})) == [
        "the directory is deleted with everything in it; files not managed by tectum are not "
        "restored later."]
    for action in (Action.CREATE, Action.UPDATE, Action.NOOP, Action.FORGET):
        assert rt.warnings(change(rt, action, after={"path": "/srv"})) == []
    assert FileType().delete_summary({"path": "/srv/a"}) is None
    assert FileType().warnings(change(FileType(), Action.DELETE, prior={"path": "/a"})) == []


def test_user_delete_warning_only_with_remove_home() -> None:
    rt = UserType()
    assert rt.warnings(change(rt, Action.DELETE, prior={"name": "bob", "remove_home": True})) \
        == ["the user's home directory is removed with the user."]
    assert rt.warnings(change(rt, Action.DELETE, prior={"name": "bob"})) == []
    assert rt.warnings(change(rt, Action.DELETE)) == []
    assert rt.warnings(change(rt, Action.UPDATE, prior={"name": "bob", "remove_home": True},
                              after={"name": "bob"})) == []


@pytest.mark.parametrize("action", [Action.CREATE, Action.UPDATE, Action.REPLACE,
                                    Action.FORGET, Action.DELETE])
def test_command_warns_it_runs_again(action: Action) -> None:
    rt = CommandType()
    assert rt.warnings(change(rt, action, after={"command": "true"})) == [
        "a command runs again; what it did is not undone."]


def test_command_noop_has_no_warning() -> None:
    assert CommandType().warnings(change(CommandType(), Action.NOOP)) == []


def test_package_delete_warning() -> None:
    rt = PackageType()
    assert rt.warnings(change(rt, Action.DELETE, prior={"name": "tree"})) == [
        "removing the package keeps its configuration files."]
    assert rt.warnings(change(rt, Action.UPDATE, after={"name": "tree"})) == []


def test_other_types_have_no_warnings() -> None:
    for rt in (ServiceType(), GroupType(), SymlinkType()):
        assert rt.warnings(change(rt, Action.DELETE, prior={"name": "x"})) == []


# -- accounts --------------------------------------------------------------------------------

def test_user_and_group_keys() -> None:
    assert UserType().implicit_keys({"name": "bob"}) == [("user", "bob")]
    assert GroupType().implicit_keys({"name": "web"}) == [("group", "web")]
    assert GroupType().implicit_keys({"name": None}) == []
    assert GroupType().implicit_needs({"name": "web"}) == []


def test_user_needs_its_groups() -> None:
    rt = UserType()
    assert rt.implicit_needs({"name": "bob", "group": "staff", "groups": ["web", "staff", 3]}) \
        == [[("group", "staff")], [("group", "web")]]
    assert rt.implicit_needs({"name": "bob"}) == []
    # an unresolved reference for the whole list names no group
    assert rt.implicit_needs({"name": "bob", "groups": token("group.g", "name")}) == []


# -- command: a secret in its argument list ----------------------------------------------------

@pytest.mark.parametrize("source", [SECRET, SENSITIVE_VAR])
def test_command_refuses_secret_argument(source: str) -> None:
    problems = CommandType().check_declared(
        {"command": ["curl", "-u", token(source, "api_token"), "https://example.org"]})
    assert problems == [(
        "Secret in a command argument",
        "A secret is an element of this command's argument list: every user of the host "
        "could read it in the process list. Pass it in environment={...} (the command reads "
        "$NAME), or write the command as a string, which runs from a private file.")]


@pytest.mark.parametrize("attrs", [
    {"command": "curl -u " + token(SECRET, "api_token")},  # a string runs from a private file
    {"command": ["curl"], "environment": {"TOKEN": token(SECRET, "api_token")}},
    {"command": ["echo", token("file.f", "path")]},
    {"command": token(SECRET, "argv")},
])
def test_command_allows_secret_elsewhere(attrs: dict[str, Any]) -> None:
    assert CommandType().check_declared(attrs) == []


def test_check_declared_default_is_empty() -> None:
    assert FileType().check_declared({"path": "/x", "content": token(SECRET, "pw")}) == []

