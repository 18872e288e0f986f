//! `sillok secret`: rotate the cluster secret (the key every internal request
//! is signed with) without stopping the cluster, in three steps, each a new
//! cluster file copied to every host followed by a restart of every process:
//!
//! 1. `stage`: a new secret is added as `next_cluster_secret`. Processes
//!    restarted on this file accept it and still sign with the current one,
//!    so they and those not yet restarted understand each other.
//! 2. `promote`: the new secret becomes `cluster_secret`, the old one
//!    `previous_cluster_secret`. Restarted processes sign with the new one
//!    and accept both; those still on step 1 accept the new one already.
//! 3. `finish`: the old secret is dropped. Only once every process runs on
//!    step 2's file; from then on the old secret opens nothing.
//!
//! Each step refuses to run out of order, and says which step comes next.

use std::path::PathBuf;

use anyhow::bail;

#[derive(clap::Args)]
pub struct SecretArgs {
    #[command(subcommand)]
    pub step: SecretStep,
}

#[derive(clap::Subcommand)]
pub enum SecretStep {
    /// Step 1: add a new secret, accepted but not yet used to sign.
    Stage(FileArg),
    /// Step 2: sign with the new secret; the old one is still accepted.
    Promote(FileArg),
    /// Step 3: drop the old secret.
    Finish(FileArg),
    /// Which step the cluster file is at.
    Status(FileArg),
}

#[derive(clap::Args)]
pub struct FileArg {
    /// The cluster file to rewrite (in place, atomically).
    #[arg(long)]
    pub cluster: PathBuf,
}

const RESTART: &str =
    "copy it to every host and restart every Sillok process (gateways, nodes, catalog replicas), one at a time";

pub fn run(a: SecretArgs) -> anyhow::Result<()> {
    let path = match &a.step {
        SecretStep::Stage(f) | SecretStep::Promote(f) | SecretStep::Finish(f) | SecretStep::Status(f) => {
            f.cluster.clone()
        }
    };
    let mut file = super::load_cluster_file(&path)?;
    let at = match (&file.next_cluster_secret, &file.previous_cluster_secret) {
        (None, None) => 0,
        (Some(_), None) => 1,
        (None, Some(_)) => 2,
        (Some(_), Some(_)) => bail!(
            "{} has both a next and a previous cluster secret, which no step of `sillok secret` makes; restore it from a copy",
            path.display()
        ),
    };
    let next = match (&a.step, at) {
        (SecretStep::Status(_), 0) => {
            println!("no rotation in progress (start one with `sillok secret stage`)");
            return Ok(());
        }
        (SecretStep::Status(_), 1) => {
            println!(
                "step 1 of 3 (staged): signing with the current secret, accepting the next; then `sillok secret promote`"
            );
            return Ok(());
        }
        (SecretStep::Status(_), _) => {
            println!(
                "step 2 of 3 (promoted): signing with the new secret, accepting the previous; then `sillok secret finish`"
            );
            return Ok(());
        }
        (SecretStep::Stage(_), 0) => {
            file.next_cluster_secret = Some(super::random_hex(32));
            "then, once every process runs on it, `sillok secret promote`"
        }
        (SecretStep::Promote(_), 1) => {
            let new = file.next_cluster_secret.take().expect("step 1 has a next secret");
            file.previous_cluster_secret = Some(std::mem::replace(&mut file.cluster_secret, new));
            "then, once every process runs on it, `sillok secret finish`"
        }
        (SecretStep::Finish(_), 2) => {
            file.previous_cluster_secret = None;
            "the old secret is then refused everywhere"
        }
        (SecretStep::Stage(_), _) => {
            bail!("a rotation is already in progress (step {at} of 3): see `sillok secret status`")
        }
        (SecretStep::Promote(_), 0) | (SecretStep::Finish(_), 0) => {
            bail!("no rotation in progress: start one with `sillok secret stage`")
        }
        (SecretStep::Promote(_), _) => bail!("already promoted: `sillok secret finish` comes next"),
        (SecretStep::Finish(_), _) => bail!("the new secret is not promoted yet: `sillok secret promote` comes first"),
    };
    super::save_cluster_file(&file, &path)?;
    println!("wrote {}: {RESTART}; {next}", path.display());
    Ok(())
}
