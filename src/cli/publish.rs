//! `mbprov publish` (placeholder until the queue work lands).

use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct PublishArgs {}

pub async fn run(_args: PublishArgs) -> ExitCode {
    ExitCode::from(1)
}
