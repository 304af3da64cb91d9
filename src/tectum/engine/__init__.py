"""The engine: the planner decides, the applier executes."""
