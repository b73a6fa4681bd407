"""Where an attempt executes: a Docker container (isolated, the default) or a local process (development only)."""
