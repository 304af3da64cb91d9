"""Host resources, as declared in a stack: ``from tectum.host import File, Package, Service``.

Each class declares one resource; its first argument is the resource's name (its address is
``TYPE.NAME``), keyword arguments are attributes. Reading an attribute of a declared resource
(``site.path``) gives a reference that orders the two resources and is resolved at plan time.

=============  ===================================================================================
File           path, content | template (+ vars), mode, owner, group, validate
Directory      path, mode, owner, group
Symlink        path, target
Package        name (defaults to the resource name), ensure ("present"/"absent"), version,
               update_cache, cache_valid_time (seconds)
AptRepository  name (its /etc/apt/sources.list.d/NAME.sources), uris, suites, components, types,
               architectures, signed_by (keyring path), enabled, options
User           name, uid, group, groups, home, shell, system, comment, ensure
Group          name, gid, system, ensure
Service        name, running, enabled, restart_on=[...], reload_on=[...]
Command        command, creates, unless, cwd, environment, run_on=[...]
Sysctl         name, value (live in /proc/sys and in /etc/sysctl.d/99-tectum-NAME.conf)
Cron           name (its /etc/cron.d file), minute, hour, day, month, weekday | special_time,
               user, job, env, ensure
GitCheckout    repo, dest, version (branch, tag or commit; unset: the remote's HEAD), depth,
               force, owner, group
PipPackages    virtualenv, packages, ensure, virtualenv_command, index_url, find_links, extra_args
Download       path, url, checksum ("sha256:..." | "sha512:...") or insecure_skip_checksum=True,
               mode, owner, group, headers, timeout
Archive        src, dest, creates, owner, group, format ("tar"/"zip"), src_sha256
LineInFile     path, line, regexp, insert_after | insert_before, ensure, create (+ mode, owner,
               group)
BlockInFile    path, block, marker, insert_after | insert_before, ensure, create (+ mode, owner,
               group)
IniValue       path, section, option, value, ensure, create (+ mode, owner, group)
=============  ===================================================================================
"""

from __future__ import annotations

from typing import Any

from tectum.config.declaration import Resource

__all__ = ["AptRepository", "Archive", "BlockInFile", "Command", "Cron", "Directory",
           "Download", "File", "GitCheckout", "Group", "IniValue", "LineInFile", "Package",
           "PipPackages", "Service", "Symlink", "Sysctl", "User"]


class File(Resource):
    """A regular file: ``File("site", path="/etc/x.conf", content="...", mode="0644")``."""

    type_name = "file"
    __slots__ = ()


class Directory(Resource):
    """A directory: ``Directory("www", path="/srv/www", mode="0755")``."""

    type_name = "directory"
    __slots__ = ()


class Symlink(Resource):
    """A symbolic link: ``Symlink("current", path="/srv/current", target="/srv/v2")``."""

    type_name = "symlink"
    __slots__ = ()


class Package(Resource):
    """An apt package: ``Package("nginx")``, ``Package("tree", version="2.1.0-1")``."""

    type_name = "package"
    label_attr = "name"
    __slots__ = ()


class AptRepository(Resource):
    """An apt source (deb822): ``AptRepository("nginx", uris=["https://apt.example.org/x"],
    suites=["bookworm"], components=["main"], signed_by=key.path)`` writes
    ``/etc/apt/sources.list.d/nginx.sources``; packages that depend on it see it."""

    type_name = "apt_repository"
    label_attr = "name"
    __slots__ = ()


class User(Resource):
    """A local user account: ``User("deploy", shell="/bin/bash", groups=["www-data"])``."""

    type_name = "user"
    label_attr = "name"
    __slots__ = ()


class Group(Resource):
    """A local group: ``Group("deploy")``."""

    type_name = "group"
    label_attr = "name"
    __slots__ = ()


class Service(Resource):
    """A service: ``Service("nginx", running=True, restart_on=[site])``.

    ``restart_on`` / ``reload_on`` take resources; the service is restarted (reloaded) when
    one of them really changes in the same apply.
    """

    type_name = "service"
    label_attr = "name"
    watch_args = ("restart_on", "reload_on")
    __slots__ = ()


class Command(Resource):
    """A command: ``Command("init", command=["/usr/bin/x", "--init"], creates="/var/lib/x")``.

    With ``creates`` or ``unless`` it runs whenever the guard does not hold; without a guard it
    runs once, and again when its arguments change. With ``run_on=[...]`` it runs only in an
    apply where one of those resources changed (Puppet's ``refreshonly`` with ``subscribe``),
    its guards still checked then.
    """

    type_name = "command"
    watch_args = ("run_on",)
    __slots__ = ()

    def __init__(self, label: str, /, **kwargs: Any) -> None:
        if kwargs.get("run_on"):
            kwargs.setdefault("refreshonly", True)
        super().__init__(label, **kwargs)


class Sysctl(Resource):
    """A kernel parameter, set live and for the next boot:
    ``Sysctl("forward", name="net.ipv4.ip_forward", value=1)``."""

    type_name = "sysctl"
    label_attr = "name"
    __slots__ = ()


class Cron(Resource):
    """A cron job in its own ``/etc/cron.d`` file (named after the resource):
    ``Cron("backup", minute="*/15", job="/usr/local/bin/backup", env={"MAILTO": ""})``."""

    type_name = "cron"
    label_attr = "name"
    __slots__ = ()


class GitCheckout(Resource):
    """A git checkout (Ansible's ``git`` module): ``GitCheckout("app",
    repo="https://example.org/app.git", dest="/srv/app", version="v1.2")``."""

    type_name = "git_checkout"
    __slots__ = ()


class PipPackages(Resource):
    """Python packages in a virtualenv (Ansible's ``pip`` module): ``PipPackages("tools",
    virtualenv="/opt/tools", packages=["httpie==3.2.2", "rich"])``."""

    type_name = "pip_packages"
    __slots__ = ()


class Download(Resource):
    """A file the host downloads and verifies (Ansible's ``get_url``): ``Download("jq",
    path="/usr/local/bin/jq", url="https://example.org/jq", checksum="sha256:...",
    mode="0755")``. Without a checksum, ``insecure_skip_checksum=True`` must say so."""

    type_name = "download"
    __slots__ = ()


class Archive(Resource):
    """An archive on the host unpacked into a directory (Ansible's ``unarchive`` with
    ``remote_src``): ``Archive("app", src=tarball.path, dest="/opt/app")``.

    When ``src`` is a :class:`Download`'s ``path``, ``src_sha256`` is set to that download's
    ``sha256`` (unless given): a download that changes re-extracts the archive in the same
    apply.
    """

    type_name = "archive"
    __slots__ = ()

    def __init__(self, label: str, /, **kwargs: Any) -> None:
        from tectum.addrs import ResourceAddress
        from tectum.values import Ref

        src = kwargs.get("src")
        if isinstance(src, Ref) and src.attr == "path" and "src_sha256" not in kwargs:
            try:
                source_type = ResourceAddress.parse(src.address).type
            except ValueError:
                source_type = None
            if source_type == "download":
                kwargs["src_sha256"] = Ref(src.address, "sha256")
        super().__init__(label, **kwargs)


class LineInFile(Resource):
    """One line of a file (Ansible's ``lineinfile``): ``LineInFile("root", path=
    "/etc/ssh/sshd_config", line="PermitRootLogin no", regexp="^#?PermitRootLogin")``."""

    type_name = "line_in_file"
    __slots__ = ()


class BlockInFile(Resource):
    """Lines between marker lines (Ansible's ``blockinfile``): ``BlockInFile("hosts",
    path="/etc/hosts", block="10.0.0.1 db\n10.0.0.2 cache\n")``."""

    type_name = "block_in_file"
    __slots__ = ()


class IniValue(Resource):
    """One ``option = value`` of an INI file (Ansible's ``ini_file``): ``IniValue("workers",
    path="/etc/app.ini", section="server", option="workers", value="4")``."""

    type_name = "ini_value"
    __slots__ = ()
