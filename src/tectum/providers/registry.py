"""The process-wide registry of resource types (read-only after first use of each type)."""

from tectum.providers.base import Registry

registry = Registry()
