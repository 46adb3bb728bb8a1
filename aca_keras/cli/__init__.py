"""Thin command-line front ends over the library functions.

Each ``aca-*`` command parses its arguments, calls one library function, and turns the
library's typed errors into a one-line message and a non-zero exit status.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from aca_keras.errors import AcaError


def run_cli(body: Callable[[], int], prog: str | None = None) -> int:
    """Run ``body``; print expected errors as ``prog: error: message`` and return 1 (2 for
    an interrupt) instead of a traceback. Set ``ACA_DEBUG=1`` to see tracebacks."""
    prog = prog or os.path.basename(sys.argv[0]) or "aca"
    try:
        return body()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 2
    except (AcaError, ValueError, FileNotFoundError, PermissionError, ImportError) as error:
        if os.environ.get("ACA_DEBUG"):
            raise
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 1
