"""The `rlm` console script: the same command line as the Rust `rlm` binary, run inside this package's engine."""

import sys
from typing import List, Optional

from . import _rlm


def main(argv: Optional[List[str]] = None) -> int:
    """Runs `rlm ARGS...`; returns (and, as a console script, exits with) the CLI's exit status."""
    args = sys.argv if argv is None else ["rlm", *argv]
    sys.stdout.flush()
    sys.stderr.flush()
    return _rlm.cli_main([str(a) for a in args])


if __name__ == "__main__":
    sys.exit(main())
