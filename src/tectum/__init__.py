"""tectum: infrastructure as code in Python.

The stack API: :func:`var` declares an input variable, :func:`output` an output, and the
resource classes in :mod:`tectum.host` declare host resources. :class:`Stack` evaluates
declarations from Python code (the CLI does this for ``stack.py``). :func:`apply_role` applies a
role (a function that declares host resources) to inventory hosts; :func:`hosts` lists them;
``host.facts`` and :func:`facts` say what a machine is.
"""

from tectum.config.declaration import (
    Host,
    Resource,
    Stack,
    apply_role,
    facts,
    hosts,
    moved,
    output,
    secret,
    var,
)
from tectum.diagnostics import Diagnostic, DiagnosticError, Diagnostics

__version__ = "0.1.0"

__all__ = [
    "Diagnostic",
    "DiagnosticError",
    "Diagnostics",
    "Host",
    "Resource",
    "Stack",
    "__version__",
    "apply_role",
    "facts",
    "hosts",
    "moved",
    "output",
    "secret",
    "var",
]
