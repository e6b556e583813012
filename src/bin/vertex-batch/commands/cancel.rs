//! `vertex-batch cancel JOB`: asks the service to cancel a job.

use crate::{
    args::{Global, JobArg},
    exit::Exit,
    fail::{CliResult, OrCli},
};

/// Cancels the job.
pub async fn cancel(g: &Global, a: JobArg) -> CliResult<Exit> {
    let client = g.client()?;
    client.cancel(&a.job).await.or_cli(g)?;
    eprintln!(
        "cancel requested: {} (it ends CANCELLED, or SUCCEEDED if it was about to)",
        a.job
    );
    Ok(Exit::Code(0))
}
