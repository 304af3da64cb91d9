"""State: the versioned document of what tectum manages, and the manager roles."""

from tectum.state.model import ResourceRecord, State, StateError

__all__ = ["ResourceRecord", "State", "StateError"]
