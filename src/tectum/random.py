"""Values tectum makes itself: ``from tectum.random import Password``.

``Password("db", length=32)`` generates a password at the first apply and keeps it (encrypted)
in state; ``pw.result`` is a reference to it, sensitive wherever it is used.
"""

from __future__ import annotations

from tectum.config.declaration import Resource

__all__ = ["Password"]


class Password(Resource):
    """A random password: ``Password("db", length=24, special=True, keepers={...})``."""

    type_name = "random_password"
    __slots__ = ()
