"""Plans: actions, resource changes, and the plan file."""

from tectum.plans.plan import Action, AttrChange, Plan, ResourceChange

__all__ = ["Action", "AttrChange", "Plan", "ResourceChange"]
