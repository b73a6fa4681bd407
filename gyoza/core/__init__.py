"""Pure domain logic: no I/O, no clock (``now`` is always passed in)."""
