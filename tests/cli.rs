//! The `sillok` binary's command line, run as a process: `--version`, the
//! configuration sources (command line > SILLOK_<FLAG> > --config file >
//! default) and `sillok init`'s refusals. Quick: nothing is served.

use std::path::Path;
use std::process::{Command, Output};

fn sillok(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sillok"));
    cmd.args(args);
    // Only the variables a test sets (what the shell running the tests set must not count).
    for (k, _) in std::env::vars() {
        if k.starts_with("SILLOK_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `(commit <hex>)` with at least 7 hex digits.
fn names_a_commit(s: &str) -> bool {
    s.split("(commit ").nth(1).is_some_and(|rest| {
        let hex: String = rest.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
        hex.len() >= 7 && rest[hex.len()..].starts_with(')')
    })
}

#[test]
fn every_version_names_the_commit() {
    for args in
        [&["--version"][..], &["gateway", "--version"], &["admin", "status", "--version"], &["dev", "--version"]]
    {
        let out = sillok(args, &[]);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        let s = text(&out.stdout);
        assert!(names_a_commit(&s), "{args:?}: {s:?}");
    }
}

#[test]
fn gateway_help_shows_the_variables() {
    let out = sillok(&["gateway", "--help"], &[]);
    let s = text(&out.stdout);
    for v in ["[env: SILLOK_NODE_TIMEOUT_MS", "[env: SILLOK_DOMAIN", "[env: SILLOK_CONFIG", "[env: SILLOK_CLUSTER"] {
        assert!(s.contains(v), "{v} missing from:\n{s}");
    }
}

/// A 3-site topology in `dir`.
fn topology(dir: &Path, sites: usize) -> String {
    let mut nodes = Vec::new();
    for s in 0..sites {
        for i in 0..3 {
            nodes.push(format!(
                r#"{{"id": {}, "site": "site-{s}", "addr": "10.0.{s}.{i}:7100", "weight": 1.0}}"#,
                s * 3 + i + 1
            ));
        }
    }
    let site_list: Vec<String> = (0..sites).map(|s| format!(r#"{{"id": "site-{s}"}}"#)).collect();
    let path = dir.join("topology.json");
    std::fs::write(&path, format!(r#"{{"sites": [{}], "nodes": [{}]}}"#, site_list.join(","), nodes.join(",")))
        .unwrap();
    path.display().to_string()
}

fn region_of(cluster: &Path) -> String {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(cluster).unwrap()).unwrap();
    v["region"].as_str().unwrap().to_string()
}

#[test]
fn command_line_beats_environment_beats_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let topo = topology(dir.path(), 3);
    let config = dir.path().join("init.toml");
    std::fs::write(
        &config,
        format!(
            "topology = {topo:?}\npgs = 64\nregion = \"from-file\"\nreplica = [\"site-0=10.0.0.9:7400\", \
             \"site-1=10.0.1.9:7400\", \"site-2=10.0.2.9:7400\"]\n"
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    // Variables that are no flag's are left alone.
    let unrelated = [("SILLOK_REQUIRE_CLIENTS", "1"), ("SILLOK_LOG", "warn")];
    let run = |name: &str, args: &[&str], env: &[(&str, &str)]| {
        // One directory per cluster: each gets its own CA and certificates.
        std::fs::create_dir(dir.path().join(name)).unwrap();
        let out_path = dir.path().join(name).join("cluster.json");
        let out = out_path.display().to_string();
        let mut all = vec!["init", "--out", &out];
        all.extend_from_slice(args);
        let mut vars = unrelated.to_vec();
        vars.extend_from_slice(env);
        let o = sillok(&all, &vars);
        assert!(o.status.success(), "{name}: {}", text(&o.stderr));
        region_of(&out_path)
    };
    assert_eq!(run("a.json", &["--config", &config], &[]), "from-file");
    assert_eq!(run("b.json", &[], &[("SILLOK_CONFIG", &config)]), "from-file");
    assert_eq!(run("c.json", &["--config", &config], &[("SILLOK_REGION", "from-env")]), "from-env");
    assert_eq!(
        run("d.json", &["--config", &config, "--region", "from-cli"], &[("SILLOK_REGION", "from-env")]),
        "from-cli"
    );
    // A list from the environment (comma-separated), everything else from variables.
    let replicas = "site-0=10.0.0.9:7400,site-1=10.0.1.9:7400,site-2=10.0.2.9:7400";
    let env = [("SILLOK_TOPOLOGY", topo.as_str()), ("SILLOK_PGS", "64"), ("SILLOK_REPLICA", replicas)];
    assert_eq!(run("e.json", &[], &env), "sillok");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("e.json").join("cluster.json")).unwrap())
            .unwrap();
    assert_eq!(v["catalog_replicas"].as_array().map(Vec::len), Some(3));
}

#[test]
fn a_bad_config_file_is_an_error_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, "cluster = \"/etc/sillok/cluster.json\"\nnode-timeout = 5000\n").unwrap();
    let config = config.display().to_string();
    let out = sillok(&["gateway", "--config", &config, "--data", "/tmp/x"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let e = text(&out.stderr);
    assert!(e.contains(&config) && e.contains("unknown key `node-timeout`"), "{e}");
    std::fs::write(&config, "block-size = \"large\"\n").unwrap();
    let e = text(&sillok(&["gateway", "--config", &config], &[]).stderr);
    assert!(e.contains(&config) && e.contains("`block-size` = \"large\""), "{e}");
}

#[test]
fn init_refuses_a_topology_that_cannot_lose_a_site() {
    let dir = tempfile::tempdir().unwrap();
    let topo = topology(dir.path(), 2);
    let out = dir.path().join("cluster.json").display().to_string();
    let o = sillok(
        &["init", "--topology", &topo, "--out", &out, "--replica", "site-0=10.0.0.9:7400,site-1=10.0.1.9:7400"],
        &[],
    );
    assert!(!o.status.success());
    let e = text(&o.stderr);
    assert!(e.contains("2 site(s)") && e.contains("at least 3"), "{e}");
    assert!(!Path::new(&out).exists(), "a refused init wrote {out}");
}

/// `sillok sim` on a tiny grid: exits 0, writes the tables and every plot as
/// one SVG document each (no timings are checked).
#[test]
fn sim_on_a_tiny_grid_writes_tables_and_svg_plots() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("scale");
    let args = ["sim", "--sites", "3", "--nodes", "3", "--pgs", "64", "--profiles", "4+2", "--max-secs", "60", "--out"];
    let mut argv: Vec<&str> = args.to_vec();
    argv.push(out.to_str().unwrap());
    let run = sillok(&argv, &[]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let table = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(table.contains("| 3×3 | 9 | 64 | 4+2 | done |"), "{table}");
    assert!(text(&run.stdout).contains("Largest configuration finished: 3 sites × 3 nodes, 64 PGs, 4+2"));
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(json["rows"][0]["status"], "done", "{json}");
    let mut plots = 0;
    for entry in std::fs::read_dir(&out).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "svg") {
            let svg = std::fs::read_to_string(&path).unwrap();
            assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""), "{}", path.display());
            assert!(svg.trim_end().ends_with("</svg>") && svg.matches("<svg").count() == 1, "{}", path.display());
            plots += 1;
        }
    }
    assert_eq!(plots, 10);
    // The same results drawn again without running anything.
    let again = dir.path().join("again");
    let results = out.join("results.json");
    let replot = sillok(
        &["sim", "--replot", results.to_str().unwrap(), "--plot-pgs", "64", "--out", again.to_str().unwrap()],
        &[],
    );
    assert!(replot.status.success(), "{}", text(&replot.stderr));
    assert_eq!(std::fs::read_to_string(again.join("results.md")).unwrap(), table);
    assert!(std::fs::read_to_string(again.join("balance.svg")).unwrap().contains("<circle"));
}

/// A secret on the command line is refused before anything runs (every
/// user of the machine could read it in `ps`); the same secret from the
/// environment is taken (the command then fails later, on the unreachable
/// catalog, which is not the refusal).
#[test]
fn a_secret_on_the_command_line_is_refused() {
    let refused =
        sillok(&["admin", "--catalog", "127.0.0.1:9", "--key-id", "K", "--secret", "s3cr3t-value", "status"], &[]);
    assert!(!refused.status.success());
    let err = text(&refused.stderr);
    assert!(err.contains("--secret holds a secret") && err.contains("SILLOK_ADMIN_SECRET"), "{err}");
    assert!(!err.contains("s3cr3t-value"), "the refusal repeats the secret: {err}");
    let from_env = sillok(
        &["admin", "--catalog", "127.0.0.1:9", "--key-id", "K", "--timeout-secs", "1", "status"],
        &[("SILLOK_ADMIN_SECRET", "s3cr3t-value")],
    );
    assert!(!from_env.status.success());
    let err = text(&from_env.stderr);
    assert!(!err.contains("holds a secret"), "{err}");
}
