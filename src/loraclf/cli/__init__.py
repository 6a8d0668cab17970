"""The command line: one module per command group; ``main`` parses and dispatches."""

from loraclf.cli.main import main

__all__ = ["main"]
