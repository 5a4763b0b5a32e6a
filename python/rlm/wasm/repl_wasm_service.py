"""``python -m rlm.wasm.repl_wasm_service --host H --port P``: the sandbox service (the Rust ``rlm sandbox serve``).

Serves ``/execute`` (the original's contract), the session API the Rust remote executor uses, ``/health`` and
``/ready``. Further options (``--max-sessions``, ``--memory-mb``, ...) are passed through; see ``rlm sandbox serve
--help``.
"""

import argparse
import sys
from typing import List, Optional

from ..cli import run_cli


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlm.wasm.repl_wasm_service", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default: 0.0.0.0)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000; 0: any free port)")
    args, rest = parser.parse_known_args(argv)
    return run_cli(["rlm", "sandbox", "serve", "--host", args.host, "--port", str(args.port), *rest])


if __name__ == "__main__":
    sys.exit(main())
