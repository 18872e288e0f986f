//! `sillok`: one binary for every role, a thin CLI over the crates.
//!
//! - `sillok node`: a storage node (storage-node crate)
//! - `sillok gateway`: the S3 endpoint (gateway crate)
//! - `sillok catalog` (alias `placement`): a catalog replica (catalog crate)
//! - `sillok admin`: the operator's tool, talking to the catalog
//! - `sillok dev`: a whole 3-site cluster on loopback, as separate processes
//! - `sillok init`: a cluster file for a real deployment
//! - `sillok sim`: the placement simulated at scale (no processes)

mod cli;
mod dev_ports;
mod sim;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "sillok", propagate_version = true, version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("SILLOK_GIT_COMMIT"), ")"), about = "Sillok: an S3-compatible object store that survives the loss of a site")]
struct Cli {
    /// Log line format on stderr: `text`, or `json` (one JSON object per
    /// line, with the fields of the line's spans, e.g. an S3 request's id).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a storage node.
    Node(cli::node::NodeArgs),
    /// Run an S3 gateway.
    Gateway(cli::gateway::GatewayArgs),
    /// Run a catalog replica (Raft: placement map, buckets, access keys).
    /// `sillok placement` is the same command under its earlier name.
    #[command(alias = "placement")]
    Catalog(cli::catalog::CatalogArgs),
    /// Operate the cluster through the catalog: status, nodes, sites, buckets, keys.
    Admin(cli::admin::AdminArgs),
    /// Make a cluster file (placement map, keys, secret) from a topology file.
    Init(cli::init::InitArgs),
    /// The certificates of internal traffic (mutual TLS): issue one more
    /// from the cluster CA.
    Cert(cli::internal_tls::CertArgs),
    /// Rotate the cluster secret in three steps (stage, promote, finish),
    /// each a new cluster file followed by a rolling restart.
    Secret(cli::secret::SecretArgs),
    /// Start a 3-site cluster on loopback (3 sites x 3 nodes + 1 gateway) and
    /// print its S3 endpoint and keys. Stops everything on Ctrl-C or SIGTERM.
    /// `sillok dev drill` loses a site of a running one under load.
    Dev(cli::dev::DevArgs),
    /// Simulate the placement at scale (sites x nodes x PGs x profiles):
    /// assignment time and memory, balance, slots moved by node add/remove
    /// and site add, map size and propagation; tables and SVG plots.
    Sim(cli::sim::SimArgs),
}

fn main() -> std::process::ExitCode {
    // Flags from the command line, SILLOK_* variables and --config (cli::config).
    let cli = match cli::config::parse::<Cli>() {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("sillok: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    // The simulation starts no runtime: its children's memory is the placement's.
    if let Command::Sim(a) = &cli.command {
        return match cli::sim::run(a) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sillok: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    // The admin tool prints its own answers; its log only says what went wrong.
    let default_filter = if matches!(cli.command, Command::Admin(_)) { "warn" } else { "info" };
    if matches!(cli.command, Command::Admin(_) | Command::Init(_) | Command::Cert(_) | Command::Secret(_)) {
        // Short-lived tools whose output may go to `head`: a closed pipe ends
        // them quietly, as it does any Unix tool, instead of a panic in
        // println!. (Servers keep Rust's default: EPIPE as an error.)
        // SAFETY: signal(2) with SIG_DFL, before any other thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let filter = tracing_subscriber::EnvFilter::try_from_env("SILLOK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
        LogFormat::Json => logs.json().init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sillok: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Node(a) => cli::node::run(a).await,
            Command::Gateway(a) => cli::gateway::run(a).await,
            Command::Dev(a) => cli::dev::run(a, cli.log_format == LogFormat::Json).await,
            Command::Catalog(a) => cli::catalog::run(a).await,
            Command::Admin(a) => cli::admin::run(a).await,
            Command::Init(a) => cli::init::run(a),
            Command::Cert(a) => cli::internal_tls::run(a),
            Command::Secret(a) => cli::secret::run(a),
            Command::Sim(_) => unreachable!("run above, without a runtime"),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sillok: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_config(sub: &str, file: &str) -> Cli {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(file);
        let args = vec!["sillok".into(), sub.into(), "--config".into(), path.into()];
        match cli::config::try_parse_from::<Cli>(args) {
            Ok(Ok(cli)) => cli,
            Ok(Err(e)) => panic!("{file}: {e}"),
            Err(e) => panic!("{file}: {e:#}"),
        }
    }

    #[test]
    fn the_example_config_files_parse_for_their_subcommands() {
        let Command::Gateway(g) = with_config("gateway", "gateway.example.toml").command else { panic!("not gateway") };
        assert_eq!(g.listen, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(g.domains, ["s3.example.com", "s3.seoul.example.com"]);
        assert_eq!(g.data, std::path::PathBuf::from("/var/lib/sillok/gateway"));
        assert_eq!((g.max_connections, g.max_requests_per_client), (4096, 256));
        assert_eq!((g.max_connections_per_client, g.form_buffer_total, g.send_timeout_s), (1024, 256 << 20, 120));
        let Command::Node(n) = with_config("node", "node.example.toml").command else { panic!("not node") };
        assert_eq!((n.id, n.rebuild_mib_per_s), (4, 100));
        assert!(n.client_first);
        let Command::Catalog(c) = with_config("catalog", "catalog.example.toml").command else { panic!("not catalog") };
        assert_eq!((c.id, c.advertise.as_deref()), (2, Some("10.2.0.10:7400")));
    }

    #[test]
    fn server_help_names_each_flags_variable() {
        let mut cmd = cli::config::command::<Cli>();
        for (sub, var) in [
            ("gateway", "SILLOK_NODE_TIMEOUT_MS"),
            ("node", "SILLOK_REBUILD_MIB_PER_S"),
            ("catalog", "SILLOK_HEARTBEAT_MS"),
        ] {
            let help = cmd.find_subcommand_mut(sub).unwrap().render_long_help().to_string();
            assert!(help.contains(&format!("[env: {var}")), "{sub}: {help}");
        }
    }
}
