//! The subcommands' front ends: argument structs, output for people (and `--json` for
//! scripts), exit codes. The work itself lives in the library modules.

use std::fmt::Display;
use std::process::ExitCode;

pub mod audit;
pub mod bootstrap;
pub mod dlq;
pub mod instance;
pub mod migrate;
pub mod pause;
pub mod plan;
pub mod publish;
pub mod status;
pub mod worker;

/// Prints an error the way every subcommand does and turns it into exit code 1.
pub fn report<E: Display>(result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mbprov: {e}");
            ExitCode::from(1)
        }
    }
}
