//! `mbprov status` (placeholder until the queue work lands).

use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct StatusArgs {}

pub async fn run(_args: StatusArgs) -> ExitCode {
    ExitCode::from(1)
}
