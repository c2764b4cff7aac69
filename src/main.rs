#![forbid(unsafe_code)]

use clap::Parser;

fn main() -> std::process::ExitCode {
    berth::cli::Cli::parse().run()
}
