"""The `rlm` console script: the same command line as the Rust `rlm` binary, run inside this package's engine."""

import signal
import sys
import threading
from typing import List, Optional

from . import _rlm


def run_cli(args: List[str]) -> int:
    """Runs the Rust CLI with `args` (``args[0]`` is the program name); returns its exit status."""
    sys.stdout.flush()
    sys.stderr.flush()
    if threading.current_thread() is not threading.main_thread():
        return _rlm.cli_main([str(a) for a in args])
    # Ctrl-C as for the binary: commands that handle it (run, serve) install their own handler; for the others the
    # default action ends the process. Python's handler would only raise KeyboardInterrupt after the CLI returned.
    previous = signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        return _rlm.cli_main([str(a) for a in args])
    finally:
        signal.signal(signal.SIGINT, previous)


def main(argv: Optional[List[str]] = None) -> int:
    """Runs `rlm ARGS...`; returns (and, as a console script, exits with) the CLI's exit status."""
    return run_cli(["rlm", *sys.argv[1:]] if argv is None else ["rlm", *argv])


if __name__ == "__main__":
    sys.exit(main())
