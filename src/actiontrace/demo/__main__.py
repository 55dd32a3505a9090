"""``python -m actiontrace.demo [--url URL]``: the same as ``actiontrace demo``.

An entry point of its own, so the demo (a library module the CLI runs) never imports
the CLI back.
"""

from __future__ import annotations

import sys

from actiontrace.cli import main

main(["demo", *sys.argv[1:]])
