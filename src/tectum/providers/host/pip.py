"""``pip_packages``: Python packages installed with pip into a virtualenv on a host.

The attributes follow Ansible's ``pip`` module: ``virtualenv`` (a directory; made with
``virtualenv_command``, default ``python3 -m venv``, when it is missing), ``packages``
(requirement strings: ``name``, ``name==1.2``, any PEP 440 specifier such as
``name>=2,<3``, extras as ``name[extra]``), ``ensure`` (``present``/``absent``: Ansible's
``state``), ``index_url``, ``find_links`` and ``extra_args`` (more ``pip install``
arguments, e.g. ``["--no-index"]``: with ``find_links`` a wheel directory, an install works
offline). One resource manages one virtualenv; list every package of it there.

Names are compared in their normalised form (PEP 503: ``Foo_Bar`` is ``foo-bar``), versions
by PEP 440 (``1.0`` satisfies ``==1.0.0``) through the ``packaging`` library, pip's own. A
package without a specifier is satisfied by any installed version: an upgrade by hand is not
drift. Environment markers (``; python_version < "3.12"``) and URL requirements
(``name @ https://...``) are refused: tectum could not tell whether what is installed
satisfies them.

Shapes (attribute dicts):

* desired: ``{"virtualenv", "packages": [str, ...], "ensure", "virtualenv_command",
  "index_url" | None, "find_links": [str, ...] | None, "extra_args": [str, ...] | None}``.
* observed (:meth:`PipPackagesType.read`): None when ``virtualenv`` does not exist; else
  ``{"virtualenv", "ensure", "packages", "installed"}`` where ``packages`` says, per
  requirement of the configuration, what the virtualenv holds in its terms: the requirement
  itself when it is met (installed and satisfied; with ``ensure="absent"``: not installed),
  else ``NAME==VERSION`` (what is installed instead) or ``NAME (not installed)``; and
  ``installed`` maps each named package that is installed (normalised name) to its version.
  So a package removed or changed by hand is drift of ``packages``, and the plan shows
  ``packages: [..., "alpha==2.0", ...] → [..., "alpha==1.0", ...]``.
* stored: the desired attributes, ``installed`` as read after the apply, and
  ``created_venv`` (tectum made the virtualenv).

**One read per host**: every virtualenv of a host is read by one shell command in the host's
facts round trip (:meth:`PipPackagesType.facts`), which runs each virtualenv's
``bin/python -I`` with an ``importlib.metadata`` one-liner listing every distribution.

**Apply** installs, in one ``pip install``, exactly the requirements the plan showed unmet
(or uninstalls, with ``ensure="absent"``, the packages it showed installed), then reads the
virtualenv again and fails when a requirement is still unmet. A virtualenv tectum makes holds
the marker file ``.tectum-creating`` (:data:`MARKER`) from before ``virtualenv_command`` runs
until its first install is done: a virtualenv a killed run left half made is read as absent,
and the next apply (or, when the resource left the configuration, the sweep after the killed
run: :meth:`PipPackagesType.sweep_interrupted`) removes it and makes it anew. A directory
without the marker is never removed.

``index_url``, ``find_links`` and ``extra_args`` never hold credentials: a URL with a user
name or password in them is refused at validate time (it would show in the host's process
list and in state); pip on the host gets them from ``~/.netrc``, a keyring or its own
configuration there (``/etc/pip.conf``, ``PIP_INDEX_URL``).

**Delete** (README "What tectum deletes"): a virtualenv tectum created is removed, with
everything in it. When the virtualenv was there before, and none of the packages were
installed, tectum counts as their creator and a delete uninstalls them (``pip uninstall``),
leaving the virtualenv; a resource whose packages were already (partly) installed was found
and is only forgotten. Uninstalling never removes the dependencies pip brought in with them
(pip has no such option), which is why a virtualenv tectum made is removed whole.
"""

from __future__ import annotations

import json
import re
import shlex
import urllib.parse
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from tectum.diagnostics import Diagnostic, DiagnosticError
from tectum.plans.plan import Action, AttrChange, ResourceChange
from tectum.providers.base import ApplyError, ImplicitKey, ReadError, ReadItem
from tectum.providers.host.base import HostType
from tectum.providers.host.connector import ConnectorError, FactRequest
from tectum.providers.host.files import ancestors, tree_path
from tectum.schema import Attr, Schema
from tectum.values import is_known

if TYPE_CHECKING:
    from tectum.providers.host.connector import CommandResult, Connector

#: what a requirement that is not installed reads as
NOT_INSTALLED = " (not installed)"
#: the environment of every pip command: never ask, never look for a newer pip
PIP_ENV = {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
#: seconds one ``pip install`` / ``uninstall`` / virtualenv creation may take
PIP_TIMEOUT = 1800.0
#: the file in a virtualenv tectum is making (until its first install is done): ``new``, or
#: ``existed`` when the directory was there (empty) before; what a killed run left is known
#: as tectum's by it, and the next apply makes the virtualenv anew
MARKER = ".tectum-creating"

# the distributions of one virtualenv, as {name: version} JSON on one line (-I: isolated:
# neither the working directory nor PYTHON* variables nor the user's site-packages count)
_LIST = ("import json, importlib.metadata as m\n"
         "print(json.dumps({d.metadata['Name'] or '': d.version "
         "for d in m.distributions()}))")

# Every virtualenv of a host in one command. Arguments: the Python one-liner, then the
# virtualenvs. One line per virtualenv: STATE <TAB> exit code <TAB> output (one line).
_READ = r"""
set -f
py=$1; shift
for v in "$@"; do
  if [ -f "$v/.tectum-creating" ] && [ ! -L "$v" ]; then
    printf 'partial\t0\t%s\n' "$(head -c 16 -- "$v/.tectum-creating" | tr -cd 'a-z')"
  elif [ -x "$v/bin/python" ]; then
    out=$("$v/bin/python" -I -c "$py" 2>&1 </dev/null); rc=$?
    printf 'venv\t%s\t%s\n' "$rc" "$(printf '%s' "$out" | tr '\n\t' '  ')"
  elif [ -L "$v" ] || [ -e "$v" ]; then
    if [ -d "$v" ] && [ ! -L "$v" ] && [ -z "$(ls -A -- "$v" 2>/dev/null)" ]; then
      printf 'empty\t0\t\n'
    else
      printf 'notvenv\t0\t\n'
    fi
  else
    printf 'absent\t0\t\n'
  fi
done
"""


def _requirement(text: str) -> Requirement:
    """The PEP 508 requirement ``text``; raises ``ValueError`` with what is wrong."""
    try:
        req = Requirement(text)
    except InvalidRequirement as exc:
        raise ValueError(f"{text!r} is not a requirement such as \"name\" or \"name==1.2\" "
                         f"({exc})") from None
    if req.url:
        raise ValueError(f"{text!r} is a URL requirement: tectum cannot tell whether what is "
                         "installed is it; build a wheel and give its directory in find_links")
    if req.marker is not None:
        raise ValueError(f"{text!r} has an environment marker: tectum cannot tell whether it "
                         "applies on the host; list the package only where it does")
    return req


def _valid_packages(value: Any) -> str | None:
    if not isinstance(value, list):
        return "must be a list of requirement strings, e.g. [\"rich\", \"httpie==3.2.2\"]"
    if not value:
        return "must not be empty"
    seen: set[str] = set()
    for item in value:
        if not isinstance(item, str):
            return f"every item must be a string, got {item!r}"
        if not is_known(item):
            continue
        try:
            req = _requirement(item)
        except ValueError as exc:
            return str(exc)
        name = canonicalize_name(req.name)
        if name in seen:
            return f"names {name} twice (as {item!r}); give each package once"
        seen.add(name)
    return None




_URL_IN = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s,]+")
#: what to do instead of a URL with credentials (the sentence ends a validation message)
_CREDENTIALS_HINT = ("must not hold credentials in a URL (user:password@ or token@): they "
                     "would show in the host's process list and in state; give them to pip on "
                     "the host instead: ~/.netrc, a keyring, or pip's configuration there "
                     "(/etc/pip.conf, or PIP_INDEX_URL / PIP_EXTRA_INDEX_URL in its "
                     "environment)")


def _has_credentials(text: str) -> bool:
    """Whether a URL in ``text`` holds a user name or password (``https://u:p@host``)."""
    for match in _URL_IN.finditer(text):
        try:
            parts = urllib.parse.urlsplit(match.group(0))
        except ValueError:
            continue
        if parts.username is not None or parts.password is not None:
            return True
    return False


def _valid_index(value: Any) -> str | None:
    if isinstance(value, str) and is_known(value) and _has_credentials(value):
        return _CREDENTIALS_HINT
    return None


def _valid_words(value: Any) -> str | None:
    problem = _valid_word_list(value)
    if problem is None:
        words = value if isinstance(value, list) else [value]
        if any(isinstance(w, str) and is_known(w) and _has_credentials(w) for w in words):
            return _CREDENTIALS_HINT
    return problem


def _valid_word_list(value: Any) -> str | None:
    if isinstance(value, str):
        try:
            words = shlex.split(value)
        except ValueError as exc:
            return f"cannot be split into words ({exc})"
    elif isinstance(value, list):
        if not all(isinstance(w, str) for w in value):
            return "every item must be a string"
        words = value
    else:
        return "must be a string (split like a shell does) or a list of strings"
    if any("\x00" in w for w in words):
        return "must not contain a NUL byte"
    return None


def _valid_command(value: Any) -> str | None:
    problem = _valid_word_list(value)
    if problem is None and isinstance(value, str) and is_known(value) \
            and not shlex.split(value):
        return "must not be empty"
    return problem


def _valid_links(value: Any) -> str | None:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        return "must be a URL or directory, or a list of them"
    if any(is_known(v) and _has_credentials(v) for v in value):
        return _CREDENTIALS_HINT
    return None


def _words(value: Any) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def observe(requirements: Sequence[str], installed: dict[str, str], ensure: str) -> list[str]:
    """What the virtualenv holds, in the terms of ``requirements`` (the module docstring):
    ``installed`` maps normalised names to versions."""
    out: list[str] = []
    for text in requirements:
        req = _requirement(text)
        name = canonicalize_name(req.name)
        have = installed.get(name)
        if ensure == "absent":
            out.append(text if have is None else f"{req.name}=={have}")
        elif have is None:
            out.append(req.name + NOT_INSTALLED)
        elif _satisfies(req, have):
            out.append(text)
        else:
            out.append(f"{req.name}=={have}")
    return out


def _satisfies(req: Requirement, version: str) -> bool:
    if not req.specifier:
        return True
    try:
        Version(version)
    except InvalidVersion:
        # a legacy version string: only an exact == can match it
        return all(s.operator in ("==", "===") and s.version == version
                   for s in req.specifier)
    return req.specifier.contains(version, prereleases=True)


class PipPackagesType(HostType):
    """Packages in a Python virtualenv (Ansible's ``pip`` module); see the module docstring."""

    name = "pip_packages"
    schema = Schema({
        "virtualenv": Attr(str, required=True, identity=True, force_new=True,
                           validate=tree_path,
                           description="absolute path of the virtualenv (made when missing)"),
        "packages": Attr(list, required=True, validate=_valid_packages,
                         description="requirement strings: \"name\", \"name==1.2\", "
                                     "\"name>=2,<3\""),
        "ensure": Attr(str, default="present", choices=("present", "absent"),
                       description="whether the packages are installed (Ansible's state)"),
        "virtualenv_command": Attr((str, list), default="python3 -m venv",
                                   validate=_valid_command,
                                   description="the command that makes the virtualenv (its "
                                               "path is added), e.g. \"python3.12 -m venv\" "
                                               "or \"virtualenv -p python3\""),
        "index_url": Attr(str, validate=_valid_index, description="pip's --index-url"),
        "find_links": Attr((str, list), validate=_valid_links,
                           description="pip's --find-links: directories or URLs of wheels"),
        "extra_args": Attr((str, list), validate=_valid_words,
                           description="more pip install arguments, e.g. [\"--no-index\"]"),
        "installed": Attr(dict, computed=True,
                          description="normalised name → version of each named package "
                                      "installed"),
        "created_venv": Attr(bool, computed=True,
                             description="tectum made the virtualenv (a delete removes it)"),
    })
    stored_computed = ("installed", "created_venv")
    #: how pip is run, who made the virtualenv, and ``ensure`` (what ``packages`` means: a
    #: read sees whether the packages meet it, reported as ``packages``): no read sees them
    unobserved = frozenset({"ensure", "virtualenv_command", "index_url", "find_links",
                            "extra_args", "created_venv"})

    # -- configuration -------------------------------------------------------------------
    def check(self, attrs: dict[str, Any]) -> list[str]:
        packages = attrs.get("packages")
        if attrs.get("ensure") == "absent" and isinstance(packages, list):
            pinned = [p for p in packages if isinstance(p, str) and is_known(p)
                      and _valid_packages([p]) is None and _requirement(p).specifier]
            if pinned:
                return [f"ensure=\"absent\" takes package names without versions; remove the "
                        f"version from {', '.join(map(repr, pinned))}."]
        return []

    def prepare(self, attrs: dict[str, Any], base_dir: str) -> dict[str, Any]:
        out = super().prepare(attrs, base_dir)
        if isinstance(out.get("find_links"), str):
            out["find_links"] = [out["find_links"]]
        return out

    def describe(self, attrs: dict[str, Any]) -> str:
        return str(attrs.get("virtualenv", ""))

    def implicit_needs(self, attrs: dict[str, Any]) -> list[list[ImplicitKey]]:
        """The nearest managed directory above the virtualenv."""
        venv = attrs.get("virtualenv")
        if isinstance(venv, str) and is_known(venv):
            parents: list[ImplicitKey] = [("dir", p) for p in ancestors(venv)]
            return [parents] if parents else []
        return []

    def journal_identity(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """The virtualenv, and which packages in it (what the object is)."""
        return {k: attrs.get(k) for k in ("virtualenv", "packages", "ensure")}

    def takes_over_as_created(self, found: dict[str, Any] | None,
                              desired: dict[str, Any]) -> bool:
        """tectum made the virtualenv (it was missing), or installs every one of the packages
        into one that held none of them; packages already (partly) installed were found."""
        if found is None:
            return True
        return desired.get("ensure", "present") == "present" and not found.get("installed")

    def delete_summary(self, prior: dict[str, Any]) -> str | None:
        if prior.get("created_venv"):
            return "removes the virtualenv with everything in it"
        return "uninstalls the packages (pip uninstall), keeps the virtualenv"

    def warnings(self, change: ResourceChange) -> list[str]:
        if change.action is Action.DELETE and not (change.prior or {}).get("created_venv"):
            return ["pip uninstall leaves the dependencies the packages brought in."]
        return []

    # -- refresh -------------------------------------------------------------------------
    def facts(self, objects: Sequence[dict[str, Any]]) -> FactRequest:
        return FactRequest(commands=(_read_argv(objects),) if objects else ())

    def read(self, target: Connector, items: Sequence[ReadItem]
             ) -> list[dict[str, Any] | None]:
        """Read every virtualenv with one command (see the module docstring for the shape):
        ``packages`` is observed in the terms of the state record when there is one (so
        drift is the world moving away from what was applied, never a change of the
        configuration), and in those of the configuration as the transient ``_packages``
        the plan compares. Raises :class:`ReadError` when the command cannot run."""
        if not items:
            return []
        found = _read(target, [str(i.attrs["virtualenv"]) for i in items])
        out: list[dict[str, Any] | None] = []
        for item, (state, dists) in zip(items, found, strict=True):
            venv = str(item.attrs["virtualenv"])
            if state in ("absent", "empty") or state.startswith("partial"):
                out.append(None)  # (partial: a killed run was making it; made anew)
                continue
            if dists is None:
                out.append({"virtualenv": venv, "_problem": state})
                continue
            basis = item.prior if item.prior is not None else item.attrs
            entry = _observed(venv, basis, dists)
            if item.desired is not None:
                entry["_packages"] = _observed(venv, item.desired, dists)["packages"]
            out.append(entry)
        return out

    def read_objects(self, conn: Connector, objects: Sequence[dict[str, Any]]
                     ) -> list[dict[str, Any] | None]:
        """:meth:`read` of ``objects`` taken as configurations."""
        return self.read(conn, [ReadItem(o, None) for o in objects])

    def exists(self, observed: dict[str, Any]) -> bool:
        return "_problem" not in observed

    # -- plan ----------------------------------------------------------------------------
    def plan(self, desired: dict[str, Any], observed: dict[str, Any] | None,
             prior: dict[str, Any] | None) -> tuple[Action, list[AttrChange]]:
        """No virtualenv → CREATE; requirements not met → UPDATE of ``packages`` (observed →
        desired); met, but the state record lists other requirements → UPDATE of
        ``packages`` (recorded → desired: the record follows the configuration); else NOOP.
        Raises :class:`DiagnosticError` when ``virtualenv`` is something else (a file, a
        directory without ``bin/python``, a broken Python)."""
        venv = str(desired.get("virtualenv"))
        ensure = desired.get("ensure", "present")
        if observed is None:
            if ensure == "absent":
                return Action.NOOP, []
            return Action.CREATE, [AttrChange("virtualenv", None, venv),
                                   AttrChange("packages", None, list(desired["packages"]))]
        if "_problem" in observed:
            raise DiagnosticError(Diagnostic.error(
                f"Cannot install into {venv}", f"{observed['_problem']}. Move it away, or "
                "choose another virtualenv path."))
        want = list(desired["packages"])
        have = observed.get("_packages", observed.get("packages"))
        if have != want:
            return Action.UPDATE, [AttrChange("packages", have, want)]
        if prior is not None and (prior.get("packages"), prior.get("ensure", "present")) != (
                want, ensure):
            # met already, but the record says less (a package found installed is now
            # managed too): recorded, pip confirms the changed entries and changes nothing
            return Action.UPDATE, [AttrChange("packages", prior.get("packages"), want)]
        return Action.NOOP, []

    def stored(self, attrs: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in attrs.items() if k in self._keep and v is not None}

    # -- apply ---------------------------------------------------------------------------
    def apply(self, conn: Connector, change: ResourceChange) -> dict[str, Any] | None:
        """Carry out the plan (see the module docstring). Raises :class:`ApplyError` with
        pip's own last words when a step fails, or when a requirement is unmet after it."""
        if change.action is Action.DELETE:
            self._delete(conn, change.prior or change.before or {})
            return None
        after = dict(change.after or {})
        venv = str(after["virtualenv"])
        packages = [str(p) for p in after["packages"]]
        ensure = str(after.get("ensure") or "present")
        if change.action is Action.REPLACE:
            old = change.before or change.prior or {}
            self._delete(conn, {**(change.prior or {}), **old})
        created = bool((change.prior or {}).get("created_venv"))
        state = _read(conn, [venv])[0][0]
        if state.startswith("partial"):
            # a killed run was making it (its marker says so): made anew
            state = _undo_partial(conn, venv, state)
        making = state in ("absent", "empty")
        if making:
            if ensure == "absent":
                return self.stored({**after, "installed": {}})
            argv = [*_words(after.get("virtualenv_command") or "python3 -m venv"), venv]
            try:
                if state == "absent":
                    conn.make_dir(venv, mode=None, owner=None, group=None)
                conn.write_file(f"{venv}/{MARKER}", f"{'new' if state == 'absent' else 'existed'}"
                                "\n".encode(), mode=None, owner=None, group=None)
            except ConnectorError as exc:
                _undo_create(conn, venv, state)
                raise ApplyError(f"cannot make the virtualenv {venv}: {exc}") from None
            res = conn.run(argv, env=PIP_ENV, timeout=PIP_TIMEOUT)
            if not res.ok:
                _undo_create(conn, venv, state)
                raise ApplyError(f"cannot make the virtualenv {venv} with {shlex.join(argv)} "
                                 f"(exit {res.returncode}): {res.error_text()}")
            created = True
        planned = next((c for c in change.changes if c.name == "packages"), None)
        before = planned.before if planned is not None else None
        todo = [want for i, want in enumerate(packages)
                if not isinstance(before, list) or i >= len(before) or before[i] != want]
        if todo:
            try:
                self._pip(conn, venv, after, todo, ensure)
            except ApplyError:
                if making:
                    _undo_create(conn, venv, state)
                raise
        if making:
            try:
                conn.remove(f"{venv}/{MARKER}")
            except ConnectorError as exc:
                raise ApplyError(f"cannot remove {venv}/{MARKER}: {exc}") from None
        now_state, dists = _read(conn, [venv])[0]
        if dists is None:
            raise ApplyError(f"cannot read {venv} after pip ran: {now_state}")
        now = observe(packages, dists, ensure)
        unmet = [f"{want} ({have})" for want, have in zip(packages, now, strict=True)
                 if want != have]
        if unmet:
            raise ApplyError(f"after pip, {venv} still does not meet: {', '.join(unmet)}")
        names = {canonicalize_name(_requirement(p).name) for p in packages}
        return self.stored({**after, "installed": {n: v for n, v in sorted(dists.items())
                                                   if n in names},
                            "created_venv": created or None})

    def sweep_interrupted(self, target: Connector,
                          identities: Sequence[dict[str, Any]]) -> None:
        """Remove a virtualenv a killed run was making (its marker file is still in it; a
        directory that was there empty before is emptied and kept). Nothing without the
        marker is touched."""
        venvs = [str(i["virtualenv"]) for i in identities
                 if isinstance(i.get("virtualenv"), str) and tree_path(i["virtualenv"]) is None]
        if not venvs:
            return
        for venv, (state, _) in zip(venvs, _read(target, venvs), strict=True):
            if state.startswith("partial"):
                _undo_partial(target, venv, state)

    def _pip(self, conn: Connector, venv: str, after: dict[str, Any], todo: list[str],
             ensure: str) -> None:
        python = f"{venv}/bin/python"
        if ensure == "absent":
            argv = [python, "-m", "pip", "uninstall", "-y",
                    *[_requirement(p).name for p in todo]]
        else:
            index = ["--index-url", str(after["index_url"])] if after.get("index_url") else []
            links = [a for link in after.get("find_links") or [] for a in ("--find-links",
                                                                              str(link))]
            argv = [python, "-m", "pip", "install", *index, *links,
                    *_words(after.get("extra_args")), *todo]
        res = conn.run(argv, env=PIP_ENV, timeout=PIP_TIMEOUT)
        if not res.ok:
            raise ApplyError(f"pip {argv[3]} in {venv} failed (exit {res.returncode}): "
                             f"{res.error_text()}")

    def _delete(self, conn: Connector, record: dict[str, Any], *, quiet: bool = False) -> None:
        venv = record.get("virtualenv")
        if not isinstance(venv, str) or not venv.startswith("/") or venv == "/":
            return
        try:
            if record.get("created_venv"):
                conn.remove(venv, recursive=True)
                return
            state, dists = _read(conn, [venv])[0]
            if dists is None:
                return  # (the virtualenv is gone: nothing left to uninstall)
            names = [_requirement(p).name for p in record.get("packages") or []
                     if canonicalize_name(_requirement(p).name) in dists]
            if names:
                res = conn.run([f"{venv}/bin/python", "-m", "pip", "uninstall", "-y", *names],
                               env=PIP_ENV, timeout=PIP_TIMEOUT)
                if not res.ok:
                    raise ApplyError(f"pip uninstall in {venv} failed (exit "
                                     f"{res.returncode}): {res.error_text()}")
        except (ConnectorError, ApplyError) as exc:
            if not quiet:
                raise ApplyError(str(exc)) from None


def _undo_create(conn: Connector, venv: str, state: str) -> None:
    """Remove what making the virtualenv made: the directory (``state`` "absent": it was
    not there), or its content ("empty": it was there, empty). Quiet: the caller raises."""
    try:
        if state == "absent":
            conn.remove(venv, recursive=True)
        else:
            conn.run(["find", venv, "-mindepth", "1", "-delete"])
    except ConnectorError:
        pass


def _undo_partial(conn: Connector, venv: str, state: str) -> str:
    """Remove a virtualenv a killed run left half made (read as ``partial-new`` /
    ``partial-existed``, from its marker); returns the state it is in afterwards ("absent"
    or "empty"). Raises :class:`ApplyError` when it cannot."""
    existed = state == "partial-existed"
    try:
        if existed:
            res = conn.run(["find", venv, "-mindepth", "1", "-delete"])
            if not res.ok:
                raise ConnectorError(f"cannot empty {venv}: {res.error_text()}")
        else:
            conn.remove(venv, recursive=True)
    except ConnectorError as exc:
        raise ApplyError(f"cannot remove the virtualenv a killed run left half made at "
                         f"{venv}: {exc}") from None
    return "empty" if existed else "absent"


def _observed(venv: str, attrs: dict[str, Any], dists: dict[str, str]) -> dict[str, Any]:
    """The virtualenv holding ``dists`` seen in the terms of ``attrs`` (its ``packages`` and
    ``ensure``): ``{"virtualenv", "packages", "installed"}``."""
    packages = [p for p in attrs.get("packages") or [] if isinstance(p, str)]
    names = {canonicalize_name(_requirement(p).name) for p in packages}
    return {"virtualenv": venv,
            "packages": observe(packages, dists, str(attrs.get("ensure") or "present")),
            "installed": {n: v for n, v in sorted(dists.items()) if n in names}}


def _read_argv(objects: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    return ("/bin/sh", "-c", _READ, "sh", _LIST,
            *[str(o["virtualenv"]) for o in objects])


def _read(conn: Connector, venvs: Sequence[str]
          ) -> list[tuple[str, dict[str, str] | None]]:
    """Per virtualenv: its state and, for a readable one, normalised name → version of every
    distribution in it (None otherwise, the state then says why)."""
    argv = _read_argv([{"virtualenv": v} for v in venvs])
    result: CommandResult = conn.run(argv, mutating=False)
    if not result.ok:
        raise ReadError(f"cannot read virtualenvs on {conn.host}: {result.error_text()} "
                        f"(exit {result.returncode})")
    lines = result.text().splitlines()
    if len(lines) != len(venvs):
        raise ReadError(f"cannot read virtualenvs on {conn.host}: {len(lines)} answers for "
                        f"{len(venvs)} virtualenvs")
    out: list[tuple[str, dict[str, str] | None]] = []
    for venv, line in zip(venvs, lines, strict=True):
        state, _, rest = line.partition("\t")
        rc, _, text = rest.partition("\t")
        if state == "venv":
            try:
                raw = json.loads(text) if rc == "0" else None
            except ValueError:
                raw = None
            if not isinstance(raw, dict):
                out.append((f"{venv}/bin/python cannot list what is installed (exit {rc}): "
                            f"{text.strip()[-300:]}", None))
                continue
            dists: dict[str, str] = {}
            for name, version in raw.items():
                if isinstance(name, str) and name and isinstance(version, str):
                    dists.setdefault(canonicalize_name(name), version)
            out.append(("venv", dists))
        elif state == "partial":
            out.append(("partial-existed" if text.strip() == "existed" else "partial-new", None))
        elif state == "notvenv":
            out.append((f"{venv} exists but is not a virtualenv (no executable bin/python)",
                        None))
        else:
            out.append((state, None))
    return out
