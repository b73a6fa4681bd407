"""Gyoza benchmarks: ``python -m bench [names...]`` (see bench/README.md).

Not a test suite: pytest never collects it (its testpaths is tests/)."""
