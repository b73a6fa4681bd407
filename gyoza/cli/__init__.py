"""The ``gyoza`` command line (typer + rich): wiring and rendering only."""
