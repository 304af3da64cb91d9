"""Configuration: the project file, stack evaluation, variables and outputs."""
