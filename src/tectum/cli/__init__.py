"""The command line: thin commands over :mod:`tectum.engine.session`, and views."""
