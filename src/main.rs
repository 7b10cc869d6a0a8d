//! The `hallmark` command line: parse, run, print, exit. All logic lives in the library.
#![warn(clippy::unwrap_used, clippy::panic)]

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
