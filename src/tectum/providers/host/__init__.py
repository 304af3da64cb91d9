"""The host provider: files, directories, symlinks, packages, users, groups, services, commands.

Resource types here act on one host through a :class:`~tectum.providers.host.connector.Connector`
(the local machine now; SSH hosts share the same contract).
"""
