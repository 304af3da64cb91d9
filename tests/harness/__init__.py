"""Test harness: a fleet of isolated Linux hosts reachable over SSH.

Import from ``tests.harness.fleet`` (``Fleet``, ``Host``, ``build_base``, ``cleanup_stale``);
``python3 -m tests.harness.fleet build|cleanup|up N`` builds the cached base, removes what dead
fleets left, or starts a fleet to poke at by hand.
"""
