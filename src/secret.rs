//! create-secret (placeholder while the webhook core lands).
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct CreateSecretArgs {}

pub fn run(_args: &CreateSecretArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet")
}
