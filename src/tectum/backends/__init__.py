"""State backends: where state versions, the journal and the lock live."""
