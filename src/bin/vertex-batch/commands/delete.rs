//! `vertex-batch delete JOB`: deletes a job.

use crate::{
    args::{Global, JobArg},
    exit::Exit,
    fail::{CliResult, OrCli},
};

/// Deletes the job.
pub async fn delete(g: &Global, a: JobArg) -> CliResult<Exit> {
    let client = g.client()?;
    client.delete(&a.job).await.or_cli(g)?;
    eprintln!("deleted: {}", a.job);
    Ok(Exit::Code(0))
}
