"""``pip_packages`` for real on this machine: virtualenvs made with ``python3 -m venv`` in
``tmp_path``, and wheels built in the test (a wheel is a zip archive: METADATA, WHEEL, RECORD;
written here with :mod:`zipfile`, so nothing is fetched) installed offline with ``--no-index
--find-links``. No mocks; everything lives in ``tmp_path``."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tectum.diagnostics import DiagnosticError
from tectum.plans.plan import Action, ResourceChange
from tectum.providers.base import ApplyError, ReadItem
from tectum.providers.host.connector import LocalConnector
from tectum.providers.host.pip import NOT_INSTALLED, PipPackagesType, observe
from tests.conftest import run_tectum

#: the name of the packages the tests build (unlikely to be on any index)
PROBE = "tectum-probe-alpha"
OTHER = "Tectum_Probe.Beta"  # written unnormalised on purpose (PEP 503: tectum-probe-beta)


# -- helpers (also used by tests/providers/cases/deploy.py) ---------------------------------

def make_wheel(directory: Path, name: str, version: str) -> Path:
    """A pure-Python wheel of ``name`` ``version`` in ``directory`` (its module holds
    ``VERSION``)."""
    dist = name.replace("-", "_").replace(".", "_")
    info = f"{dist}-{version}.dist-info"
    files = {
        f"{dist.lower()}/__init__.py": f"VERSION = {version!r}\n".encode(),
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                            .encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tectum-tests\n"
                         b"Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    lines = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
        lines.append(f"{path},sha256={digest.decode()},{len(data)}")
    lines.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(lines) + "\n").encode()
    wheel = directory / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return wheel


def pip(venv: str | Path, *args: str) -> str:
    """Run the virtualenv's pip; its output. Fails the test when pip fails."""
    proc = subprocess.run([f"{venv}/bin/python", "-m", "pip", "-q",
                           "--disable-pip-version-check", *args], capture_output=True,
                          text=True, check=False, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"pip {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def installed(venv: str | Path, name: str) -> str | None:
    """The version of ``name`` in ``venv``, or None."""
    proc = subprocess.run([f"{venv}/bin/python", "-I", "-c",
                           f"import importlib.metadata as m; print(m.version({name!r}))"],
                          capture_output=True, text=True, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


@pytest.fixture
def conn() -> LocalConnector:
    return LocalConnector(log_path="")


@pytest.fixture
def rt() -> PipPackagesType:
    return PipPackagesType()


@pytest.fixture
def wheels(tmp_path: Path) -> Path:
    directory = tmp_path / "wheels"
    directory.mkdir()
    for name, version in ((PROBE, "1.0"), (PROBE, "2.0"), (OTHER, "0.3")):
        make_wheel(directory, name, version)
    return directory


def attrs_of(venv: Path, wheels: Path, packages: list[str], **more: Any) -> dict[str, Any]:
    return {"virtualenv": str(venv), "packages": packages, "find_links": [str(wheels)],
            "extra_args": ["--no-index"], **more}


def plan(rt: PipPackagesType, conn: LocalConnector, attrs: dict[str, Any],
         prior: dict[str, Any] | None = None) -> ResourceChange:
    desired = rt.prepare(attrs, "/")
    obs = rt.read(conn, [ReadItem(desired, prior)])[0]
    action, changes = rt.plan(desired, obs, prior)
    return ResourceChange("pip_packages.tools", "pip_packages", action,
                          rt.stored(obs) if obs is not None else None, desired, changes,
                          prior=prior)


def converge(rt: PipPackagesType, conn: LocalConnector, attrs: dict[str, Any],
             prior: dict[str, Any] | None = None) -> tuple[ResourceChange, dict[str, Any]]:
    change = plan(rt, conn, attrs, prior)
    if change.action is Action.NOOP:
        assert prior is not None
        return change, prior
    record = rt.apply(conn, change)
    assert record is not None
    return change, record


def delete(rt: PipPackagesType, conn: LocalConnector, record: dict[str, Any]) -> None:
    assert rt.apply(conn, ResourceChange("pip_packages.tools", "pip_packages", Action.DELETE,
                                         None, None, prior=record)) is None


# -- pure: what a virtualenv holds, in the terms of the requirements ---------------------------

def test_observe_compares_normalised_names_and_pep440_versions() -> None:
    have = {"tectum-probe-alpha": "1.0.0", "tectum-probe-beta": "0.3"}
    assert observe(["Tectum_Probe.Alpha==1.0", "tectum-probe-beta>=0.2,<1"], have,
                   "present") == ["Tectum_Probe.Alpha==1.0", "tectum-probe-beta>=0.2,<1"]
    assert observe(["tectum-probe-alpha>=2", "gone"], have, "present") == [
        "tectum-probe-alpha==1.0.0", "gone" + NOT_INSTALLED]
    assert observe(["tectum-probe-beta", "gone"], have, "absent") == [
        "tectum-probe-beta==0.3", "gone"]


def test_bad_requirements_are_refused_by_the_schema(rt: PipPackagesType) -> None:
    check = rt.schema.attrs["packages"].check
    assert check(["rich", "httpie==3.2.2", "x[socks]>=1,<2"]) is None
    assert "URL requirement" in (check(["x @ https://example.org/x.whl"]) or "")
    assert "environment marker" in (check(['x; python_version < "3"']) or "")
    assert "twice" in (check(["Foo_Bar", "foo-bar==1"]) or "")
    assert check(["not a requirement!"]) is not None
    assert check([]) is not None and check("rich") is not None
    assert rt.schema.attrs["virtualenv"].check("venv") is not None
    assert rt.check({"ensure": "absent", "packages": ["rich==1"]})


# -- for real ----------------------------------------------------------------------------------

def test_creates_the_venv_installs_offline_and_a_noop_only_reads(
        rt: PipPackagesType, conn: LocalConnector, wheels: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    attrs = attrs_of(venv, wheels, [f"{PROBE}==1.0", OTHER])
    change, record = converge(rt, conn, attrs)
    assert change.action is Action.CREATE
    assert record["created_venv"] is True
    assert record["installed"] == {PROBE: "1.0", "tectum-probe-beta": "0.3"}
    assert installed(venv, PROBE) == "1.0" and installed(venv, OTHER) == "0.3"

    mark = len(conn.log)
    again = plan(rt, conn, attrs, record)
    assert again.action is Action.NOOP
    assert [e for e in conn.log[mark:] if e["mutating"]] == []
    assert len(conn.log[mark:]) == 1, "every virtualenv in one command"


def test_drift_a_package_removed_or_changed_by_hand(rt: PipPackagesType, conn: LocalConnector,
                                                    wheels: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    attrs = attrs_of(venv, wheels, [f"{PROBE}==1.0", OTHER])
    _, record = converge(rt, conn, attrs)

    pip(venv, "install", "--no-index", "--find-links", str(wheels), f"{PROBE}==2.0")
    pip(venv, "uninstall", "-y", OTHER)
    change = plan(rt, conn, attrs, record)
    assert change.action is Action.UPDATE
    assert change.before is not None and change.before["packages"] == [
        f"{PROBE}==2.0", "Tectum_Probe.Beta" + NOT_INSTALLED]  # as read: drift of packages
    assert [(c.name, c.before, c.after) for c in change.changes] == [
        ("packages", [f"{PROBE}==2.0", "Tectum_Probe.Beta" + NOT_INSTALLED],
         [f"{PROBE}==1.0", OTHER])]
    record = rt.apply(conn, change) or {}
    assert installed(venv, PROBE) == "1.0" and installed(venv, OTHER) == "0.3"

    # an unpinned package upgraded by hand still meets its requirement: not drift
    unpinned = attrs_of(venv, wheels, [PROBE])
    change, record = converge(rt, conn, unpinned, record)
    # (met already: the record follows the configuration, nothing is installed)
    assert change.action is Action.UPDATE and record["packages"] == [PROBE]
    assert installed(venv, PROBE) == "1.0"
    pip(venv, "install", "--no-index", "--find-links", str(wheels), f"{PROBE}==2.0")
    change = plan(rt, conn, unpinned, record)
    assert change.action is Action.NOOP
    assert change.before is not None and change.before["packages"] == [PROBE]


def test_a_configuration_change_is_not_drift(rt: PipPackagesType, conn: LocalConnector,
                                             wheels: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _, record = converge(rt, conn, attrs_of(venv, wheels, [f"{PROBE}==1.0"]))
    change = plan(rt, conn, attrs_of(venv, wheels, [f"{PROBE}==2.0"]), record)
    assert change.action is Action.UPDATE
    # the world still holds what the record says: read in the record's terms, no drift
    assert change.before is not None and change.before["packages"] == record["packages"]
    record = rt.apply(conn, change) or {}
    assert installed(venv, PROBE) == "2.0" and record["installed"] == {PROBE: "2.0"}


def test_ensure_absent_uninstalls_only_what_it_names(rt: PipPackagesType, conn: LocalConnector,
                                                     wheels: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _, record = converge(rt, conn, attrs_of(venv, wheels, [PROBE, OTHER]))
    change, record = converge(rt, conn, attrs_of(venv, wheels, [PROBE], ensure="absent"),
                              record)
    assert [(c.before, c.after) for c in change.changes] == [([f"{PROBE}==2.0"], [PROBE])]
    assert installed(venv, PROBE) is None and installed(venv, OTHER) == "0.3"
    assert plan(rt, conn, attrs_of(venv, wheels, [PROBE], ensure="absent"),
                record).action is Action.NOOP


def test_delete_removes_a_venv_it_made(rt: PipPackagesType, conn: LocalConnector,
                                       wheels: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    change, record = converge(rt, conn, attrs_of(venv, wheels, [PROBE]))
    assert rt.takes_over_as_created(change.before, change.after or {})
    assert "removes the virtualenv" in (rt.delete_summary(record) or "")
    delete(rt, conn, record)
    assert not venv.exists()


def test_delete_in_a_venv_that_was_there_uninstalls_and_keeps_it(
        rt: PipPackagesType, conn: LocalConnector, wheels: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
    pip(venv, "install", "--no-index", "--find-links", str(wheels), OTHER)
    change, record = converge(rt, conn, attrs_of(venv, wheels, [PROBE]))
    assert change.action is Action.UPDATE and "created_venv" not in record
    # none of its packages was there: tectum installs them all, so it counts as their maker
    assert rt.takes_over_as_created(change.before, change.after or {})
    assert "uninstalls" in (rt.delete_summary(record) or "")
    delete(rt, conn, record)
    assert venv.is_dir() and installed(venv, PROBE) is None
    assert installed(venv, OTHER) == "0.3", "what it did not name stays"
    # a package that was already installed: found, forgotten by the engine
    found = plan(rt, conn, attrs_of(venv, wheels, [OTHER]))
    assert found.action is Action.NOOP
    assert not rt.takes_over_as_created(found.before, found.after or {})


def test_a_failed_install_names_pip_and_removes_the_venv_it_made(
        rt: PipPackagesType, conn: LocalConnector, wheels: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    change = plan(rt, conn, attrs_of(venv, wheels, [f"{PROBE}==9.9"]))
    with pytest.raises(ApplyError, match=r"pip install in .* failed .*9\.9"):
        rt.apply(conn, change)
    assert not venv.exists()


def test_something_else_at_the_path_is_a_plan_diagnostic(
        rt: PipPackagesType, conn: LocalConnector, wheels: Path, tmp_path: Path) -> None:
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "data").write_text("x")
    with pytest.raises(DiagnosticError) as info:
        plan(rt, conn, attrs_of(odd, wheels, [PROBE]))
    assert "not a virtualenv" in next(iter(info.value.diagnostics)).detail


def test_through_the_engine(wheels: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    root = tmp_path / "proj"
    root.mkdir()

    def stack(packages: list[str]) -> None:
        (root / "stack.py").write_text(
            "from tectum.host import PipPackages\n"
            f"PipPackages('tools', virtualenv={str(venv)!r}, packages={packages!r}, "
            f"find_links=[{str(wheels)!r}], extra_args=['--no-index'])\n")

    stack([f"{PROBE}==1.0"])
    result = run_tectum("apply", "--auto-approve", str(root))
    assert result.returncode == 0, result.output
    assert installed(venv, PROBE) == "1.0"
    assert run_tectum("plan", "--detailed-exitcode", str(root)).returncode == 0
    pip(venv, "uninstall", "-y", PROBE)
    result = run_tectum("drift", "--detailed-exitcode", str(root))
    assert result.returncode == 2 and "packages" in result.output, result.output
    assert run_tectum("apply", "--auto-approve", str(root)).returncode == 0
    assert installed(venv, PROBE) == "1.0"
    result = run_tectum("destroy", "--auto-approve", str(root))
    assert result.returncode == 0, result.output
    assert not venv.exists()


# -- credentials, interrupted virtualenvs ------------------------------------------------------

def test_credentials_in_urls_are_refused(rt: PipPackagesType) -> None:
    attrs = rt.schema.attrs
    for key, bad in (("index_url", "https://u:s3cr3t@pypi.example.org/simple"),
                     ("find_links", ["https://t0ken@example.org/wheels"]),
                     ("extra_args", ["--extra-index-url", "https://u:s3cr3t@example.org/s"]),
                     ("extra_args", "--extra-index-url=https://u:s3cr3t@example.org/s")):
        problem = attrs[key].check(bad) or ""
        assert "PIP_INDEX_URL" in problem and "s3cr3t" not in problem, (key, bad)
    assert attrs["index_url"].check("https://pypi.example.org/simple") is None
    assert attrs["find_links"].check(["/srv/wheels"]) is None
    assert attrs["extra_args"].check(["--no-index"]) is None


def test_an_index_url_with_a_password_is_refused_before_anything_runs(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "stack.py").write_text(
        "from tectum.host import PipPackages\n"
        f"PipPackages('tools', virtualenv={str(tmp_path / 'venv')!r}, packages=['pip'], "
        "index_url='https://u:s3cr3t@127.0.0.1:9/simple')\n")
    result = run_tectum("plan", str(root))
    assert result.returncode == 1 and "PIP_INDEX_URL" in result.output, result.output
    assert "s3cr3t" not in result.output
    assert not (tmp_path / "venv").exists()


@pytest.mark.parametrize("step", ["venv", "install"])
def test_a_killed_virtualenv_creation_is_redone_by_the_next_apply(
        wheels: Path, tmp_path: Path, step: str) -> None:
    from tests.providers.host.test_git import apply_killed_at

    venv, root = tmp_path / "venv", tmp_path / "proj"
    root.mkdir()
    (root / "stack.py").write_text(
        "from tectum.host import PipPackages\n"
        f"PipPackages('tools', virtualenv={str(venv)!r}, packages=[{PROBE + '==1.0'!r}], "
        f"find_links=[{str(wheels)!r}], extra_args=['--no-index'])\n")
    # killed before `python3 -m venv` ran, or after it, before pip installed anything
    apply_killed_at(step, root)
    assert (venv / ".tectum-creating").exists()
    result = run_tectum("plan", str(root))
    assert result.returncode == 0 and "1 to add" in result.output, result.output
    result = run_tectum("apply", "--auto-approve", str(root))
    assert result.returncode == 0, result.output
    assert installed(venv, PROBE) == "1.0" and not (venv / ".tectum-creating").exists()
    assert run_tectum("plan", "--detailed-exitcode", str(root)).returncode == 0
    result = run_tectum("destroy", "--auto-approve", str(root))
    assert result.returncode == 0, result.output
    assert not venv.exists(), "the interrupted run made it: destroy removes it"


def test_sweep_removes_a_half_made_virtualenv_and_only_that(
        rt: PipPackagesType, conn: LocalConnector, wheels: Path, tmp_path: Path) -> None:
    from tests.providers.host.test_git import apply_killed_at

    venv, kept = tmp_path / "venv", tmp_path / "kept"
    kept.mkdir()  # there before, empty: a virtualenv is made in it
    for n, path in enumerate((venv, kept)):
        root = tmp_path / f"proj{n}"
        root.mkdir()
        (root / "stack.py").write_text(
            "from tectum.host import PipPackages\n"
            f"PipPackages('tools', virtualenv={str(path)!r}, packages=[{PROBE!r}], "
            f"find_links=[{str(wheels)!r}], extra_args=['--no-index'])\n")
        apply_killed_at("install", root)
        assert (path / ".tectum-creating").exists() and (path / "pyvenv.cfg").exists()
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "pyvenv.cfg").write_text("home = /usr/bin\n")  # someone's, without the marker
    rt.sweep_interrupted(conn, [{"virtualenv": str(v)} for v in (venv, kept, odd)])
    assert not venv.exists()
    assert kept.is_dir() and list(kept.iterdir()) == [], "was there (empty): emptied, kept"
    assert (odd / "pyvenv.cfg").exists()
