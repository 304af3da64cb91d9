"""tectum-jsonkeys: keys kept in a JSON file, as a tectum provider written outside tectum.

In a stack::

    from tectum_jsonkeys import Key

    api = Key("api", value="...")        # api.id: the id the server assigns on create

The provider (``jsonkeys``) is found through this package's entry point; its settings go in
``tectum.toml``::

    [providers.jsonkeys]
    path = "keys.json"
"""

from __future__ import annotations

from tectum.config.declaration import Resource

__all__ = ["Key"]
__version__ = "0.1"


class Key(Resource):
    """A key: ``Key("api", value="...")`` (``name`` defaults to the resource name)."""

    type_name = "jsonkeys_key"
    label_attr = "name"
    __slots__ = ()
