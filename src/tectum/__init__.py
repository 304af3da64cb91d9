"""tectum: infrastructure as code in Python.

The stack API: :func:`var` declares an input variable, :func:`output` an output, and the
resource classes in :mod:`tectum.host` declare host resources. :class:`Stack` evaluates
declarations from Python code (the CLI does this for ``stack.py``).
"""

from tectum.config.declaration import Resource, Stack, output, var
from tectum.diagnostics import Diagnostic, DiagnosticError, Diagnostics

__version__ = "0.1.0"

__all__ = [
    "Diagnostic",
    "DiagnosticError",
    "Diagnostics",
    "Resource",
    "Stack",
    "__version__",
    "output",
    "var",
]
