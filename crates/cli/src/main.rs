//! `rlm`: run Recursive Language Models from the command line (see the library half of this crate).

use std::process::ExitCode;

fn main() -> ExitCode {
    rlm_cli::main_with_args(std::env::args_os())
}
