"""The `charlm` command line: parse arguments, call the library, print. No logic lives here.

app.py builds the Typer app and registers the commands; each command group has its own module (train, sample,
evaluate, info, explain), sharing the parameters in options.py and the stdout writers in output.py.
"""

from charlm.cli.app import app, main

__all__ = ["app", "main"]
