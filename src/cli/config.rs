//! Where every `sillok` flag can come from, and in which order. This module
//! owns the configuration sources besides the command line, for every
//! subcommand at once (no subcommand declares any of this itself):
//!
//! - the environment: each flag `--some-flag` is also `SILLOK_SOME_FLAG`
//!   (the long name upper-cased, `-` → `_`), except flags that already name
//!   their own variable (`SILLOK_ADMIN_KEY_ID`, `SILLOK_ADMIN_SECRET`);
//!   variables that match no flag (`SILLOK_LOG`, ...) are not looked at;
//! - a TOML file, `--config FILE` or `SILLOK_CONFIG`, whose keys are the
//!   long names of the subcommand's flags (`node-timeout-ms = 5000`;
//!   `node_timeout_ms` too), arrays for repeated flags (`domain = ["a",
//!   "b"]`), `true`/`false` for switches. An unknown key, or a value the
//!   flag would refuse, is an error naming the file and the key.
//!
//! Precedence: command line > environment > config file > built-in default.
//! Flags that hold a secret ([`SECRET_FLAGS`]) are refused on the command
//! line, where every user of the machine can read them (`ps`,
//! `/proc/PID/cmdline`): they come from the environment or the file only.
//! Mechanism: the clap `Command` derived from the `Cli` gets an `env` on
//! every long flag, the file's values become the flags' defaults, and only
//! then is the command line parsed. A flag added anywhere later gets all of
//! this without further work.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, bail};
use clap::{Arg, ArgAction, ArgMatches, Command};

/// Flags whose value is a secret: refused on the command line.
pub const SECRET_FLAGS: &[&str] = &["secret"];

/// The variable that names the config file (`--config`).
pub const CONFIG_ENV: &str = "SILLOK_CONFIG";
const CONFIG_ID: &str = "config";

/// The variable a flag is read from when the command line does not give it.
pub fn env_name(long: &str) -> String {
    format!("SILLOK_{}", long.to_ascii_uppercase().replace('-', "_"))
}

/// Every variable some subcommand's flag is read from, and `SILLOK_CONFIG`
/// (known once [`parse`] has run): `sillok dev` clears them in its children,
/// which get their whole configuration from the command line it builds.
pub fn flag_env_vars() -> &'static [String] {
    FLAG_ENV_VARS.get().map(Vec::as_slice).unwrap_or(&[])
}
static FLAG_ENV_VARS: OnceLock<Vec<String>> = OnceLock::new();

/// clap keeps `&'static str`s (without its `string` feature); the few names
/// made here live as long as the process anyway.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// Whether `arg` is a flag configuration may set (not help, version,
/// positional arguments, or `--config` itself).
fn configurable(arg: &Arg) -> Option<&str> {
    if matches!(arg.get_action(), ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version) {
        return None;
    }
    arg.get_long().filter(|long| *long != CONFIG_ID)
}

/// `cmd` with `--config` (global) and an `env` on every configurable flag
/// of every subcommand, recursively; collects the variable names in `vars`.
fn with_env(cmd: Command, vars: &mut Vec<String>, root: bool) -> Command {
    let mut cmd = cmd.mut_args(|arg| match configurable(&arg) {
        Some(long) if arg.get_env().is_none() => {
            let name = env_name(long);
            if !root {
                vars.push(name.clone());
            }
            arg.env(leak(name))
        }
        Some(_) => {
            if let Some(env) = arg.get_env().and_then(|e| e.to_str()) {
                vars.push(env.to_string());
            }
            arg
        }
        None => arg,
    });
    let names: Vec<String> = cmd.get_subcommands().map(|s| s.get_name().to_string()).collect();
    for name in names {
        cmd = cmd.mut_subcommand(name, |sub| with_env(sub, vars, false));
    }
    if root {
        cmd = cmd.arg(
            Arg::new(CONFIG_ID)
                .long(CONFIG_ID)
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .env(CONFIG_ENV)
                .global(true)
                .help("A TOML file of flag values (`node-timeout-ms = 5000`); the command line and SILLOK_* variables override it"),
        );
    }
    cmd
}

/// `T`'s clap command as [`parse`] uses it (`--config`, every variable).
#[cfg(test)]
pub fn command<T: clap::CommandFactory>() -> Command {
    with_env(T::command(), &mut Vec::new(), true)
}

/// Parses the process's command line into `T` with the environment and the
/// config file applied (see the module doc). Help, version and command-line
/// errors end the process as clap does; a bad config file is an `Err`.
pub fn parse<T: clap::Parser>() -> anyhow::Result<T> {
    parse_from::<T>(std::env::args_os().collect())
}

/// [`parse`] over given arguments (the first is the program name).
pub fn parse_from<T: clap::Parser>(args: Vec<OsString>) -> anyhow::Result<T> {
    match try_parse_from::<T>(args)? {
        Ok(t) => Ok(t),
        Err(e) => e.exit(),
    }
}

/// The outer `Err`: the config file; the inner one: clap's (help and
/// version included, as clap reports them).
pub fn try_parse_from<T: clap::Parser>(args: Vec<OsString>) -> anyhow::Result<Result<T, clap::Error>> {
    let mut vars = Vec::new();
    let cmd = with_env(T::command(), &mut vars, true);
    vars.push(CONFIG_ENV.to_string());
    let _ = FLAG_ENV_VARS.set(vars);

    // First pass, forgiving: which subcommand, and which config file.
    let (path, file) = match cmd.clone().ignore_errors(true).try_get_matches_from(args.clone()) {
        Ok(m) => config_of(&m),
        Err(_) => (Vec::new(), None),
    };
    let cmd = match file {
        Some(file) if !path.is_empty() => apply_file(cmd, &path, &file)?,
        _ => cmd,
    };
    let mut cmd = cmd;
    Ok(match cmd.try_get_matches_from_mut(args) {
        Ok(m) => match secret_on_command_line(&cmd, &m) {
            Some(flag) => Err(cmd.error(
                clap::error::ErrorKind::ArgumentConflict,
                format!(
                    "--{flag} holds a secret, and secrets are not taken on the command line, where every user of \
                     this machine can read them (ps, /proc/PID/cmdline): set {} instead, or put `{flag} = \"...\"` \
                     in the --config file (readable by you only)",
                    env_name_of(&cmd, flag)
                ),
            )),
            None => T::from_arg_matches(&m).map_err(|e| e.format(&mut cmd)),
        },
        Err(e) => Err(e),
    })
}

/// The first secret flag given on the command line, in the matches of
/// `cmd` or those of its subcommands (only ids `cmd` defines are asked:
/// clap panics on others).
fn secret_on_command_line(cmd: &Command, m: &ArgMatches) -> Option<&'static str> {
    let given = |id: &str| {
        cmd.get_arguments().any(|a| a.get_id() == id)
            && m.value_source(id) == Some(clap::parser::ValueSource::CommandLine)
    };
    SECRET_FLAGS.iter().copied().find(|id| given(id)).or_else(|| {
        let (name, sub) = m.subcommand()?;
        secret_on_command_line(cmd.find_subcommand(name)?, sub)
    })
}

/// The environment variable a flag is read from (its own, or the derived one).
fn env_name_of(cmd: &Command, flag: &str) -> String {
    fn find(cmd: &Command, flag: &str) -> Option<String> {
        cmd.get_arguments()
            .find(|a| a.get_long() == Some(flag))
            .and_then(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
            .or_else(|| cmd.get_subcommands().find_map(|s| find(s, flag)))
    }
    find(cmd, flag).unwrap_or_else(|| env_name(flag))
}

/// The subcommand path the matches name, and the deepest `--config` given.
fn config_of(m: &ArgMatches) -> (Vec<String>, Option<PathBuf>) {
    let mut path = Vec::new();
    let mut file = m.try_get_one::<PathBuf>(CONFIG_ID).ok().flatten().cloned();
    let mut m = m;
    while let Some((name, sub)) = m.subcommand() {
        path.push(name.to_string());
        if let Some(f) = sub.try_get_one::<PathBuf>(CONFIG_ID).ok().flatten() {
            file = Some(f.clone());
        }
        m = sub;
    }
    (path, file)
}

/// The commands from the root down to the subcommand at `path`.
fn chain<'a>(cmd: &'a Command, path: &[String]) -> Vec<&'a Command> {
    let mut out = vec![cmd];
    let mut at = cmd;
    for name in path {
        match at.find_subcommand(name) {
            Some(sub) => {
                out.push(sub);
                at = sub;
            }
            None => break,
        }
    }
    out
}

/// `cmd` with `f` applied to the subcommand at `path` (the root if empty).
fn mut_at(cmd: Command, path: &[String], f: &mut dyn FnMut(Command) -> Command) -> Command {
    match path.split_first() {
        None => f(cmd),
        Some((name, rest)) => cmd.mut_subcommand(name, |sub| mut_at(sub, rest, f)),
    }
}

/// Reads the TOML file and makes its values the defaults of the flags of
/// the subcommand at `path` (and of the commands above it).
fn apply_file(cmd: Command, path: &[String], file: &Path) -> anyhow::Result<Command> {
    let values = read_file(&cmd, path, file)?;
    let mut cmd = cmd;
    for (depth, id, vals) in values {
        let vals: Vec<&'static str> = vals.into_iter().map(leak).collect();
        cmd = mut_at(cmd, &path[..depth], &mut |c: Command| {
            let vals = vals.clone();
            c.mut_arg(id.as_str(), move |a| {
                // A value from the file satisfies `required` (clap counts
                // only explicit values for it, not defaults).
                let a = a.required(false);
                if vals.len() == 1 { a.default_value(vals[0]) } else { a.default_values(vals) }
            })
        });
    }
    Ok(cmd)
}

/// The file's values as `(depth in the chain, arg id, values)`, every key
/// checked: known, not twice, of a type and value its flag accepts.
pub fn read_file(cmd: &Command, path: &[String], file: &Path) -> anyhow::Result<Vec<(usize, String, Vec<String>)>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read the config file {}", file.display()))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        anyhow::anyhow!("the config file {} is not valid TOML: {}", file.display(), e.to_string().trim_end())
    })?;
    let commands = chain(cmd, path);
    let what = format!("sillok {}", path.join(" "));
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut out = Vec::new();
    for (key, value) in &table {
        let long = key.replace('_', "-");
        if let Some(earlier) = seen.insert(long.clone(), key.clone()) {
            bail!("the config file {} sets `{long}` twice (as `{earlier}` and `{key}`)", file.display());
        }
        if long == CONFIG_ID {
            bail!("the config file {}: `{key}` cannot be set in a config file", file.display());
        }
        let found = commands.iter().enumerate().rev().find_map(|(depth, c)| {
            c.get_arguments().find(|a| configurable(a) == Some(long.as_str())).map(|a| (depth, a))
        });
        let Some((depth, arg)) = found else {
            let mut known: Vec<&str> =
                commands.iter().flat_map(|c| c.get_arguments()).filter_map(configurable).collect();
            known.sort_unstable();
            known.dedup();
            bail!(
                "the config file {}: unknown key `{key}`: `{what}` has no flag --{long} (its flags: {})",
                file.display(),
                known.join(", ")
            );
        };
        if SECRET_FLAGS.contains(&arg.get_id().as_str()) {
            refuse_if_open(file, "holds a secret")?;
        }
        let vals =
            values_of(value, arg).map_err(|e| anyhow::anyhow!("the config file {}: `{key}`: {e}", file.display()))?;
        for v in &vals {
            check_value(arg, v)
                .map_err(|e| anyhow::anyhow!("the config file {}: `{key}` = {v:?}: {e}", file.display()))?;
        }
        out.push((depth, arg.get_id().to_string(), vals));
    }
    Ok(out)
}

/// Refuses a file that holds a secret when group or others may read it.
pub fn refuse_if_open(file: &Path, what: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(file).with_context(|| format!("cannot read {}", file.display()))?.permissions().mode();
    if mode & 0o077 != 0 {
        bail!(
            "{} {what} and is readable by group or others (mode {:o}): run `chmod 600 {}` and start again",
            file.display(),
            mode & 0o777,
            file.display()
        );
    }
    Ok(())
}

/// Whether `arg` takes several values (a repeated flag or a list).
fn is_multiple(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Append) || arg.get_num_args().is_some_and(|n| n.max_values() > 1)
}

/// A TOML value as the strings clap would see for `arg`.
fn values_of(value: &toml::Value, arg: &Arg) -> Result<Vec<String>, String> {
    let scalar = |v: &toml::Value| -> Result<String, String> {
        match v {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(i) => Ok(i.to_string()),
            toml::Value::Float(f) => Ok(f.to_string()),
            toml::Value::Boolean(b) => Ok(b.to_string()),
            toml::Value::Datetime(_) => Err("a date is not a value of any flag".into()),
            toml::Value::Array(_) => Err("a list inside a list is not a value of any flag".into()),
            toml::Value::Table(_) => {
                Err("a table is not a value of any flag (keys are flat: `flag-name = value`)".into())
            }
        }
    };
    let split = |s: String| -> Vec<String> {
        match arg.get_value_delimiter() {
            Some(d) => s.split(d).map(str::to_string).collect(),
            None => vec![s],
        }
    };
    match value {
        toml::Value::Array(items) => {
            if !is_multiple(arg) {
                return Err("this flag takes one value, not a list".into());
            }
            let mut out = Vec::new();
            for item in items {
                out.extend(split(scalar(item)?));
            }
            Ok(out)
        }
        v => {
            let s = scalar(v)?;
            Ok(if is_multiple(arg) { split(s) } else { vec![s] })
        }
    }
}

/// Whether `arg`'s value parser accepts `v`,
/// parsed as the command line would (`--flag=v`) by a one-flag command.
fn check_value(arg: &Arg, v: &str) -> Result<(), String> {
    let probe = Arg::new("value")
        .long("value")
        .value_name("VALUE")
        .action(ArgAction::Set)
        .value_parser(arg.get_value_parser().clone());
    let probe_cmd = Command::new("config").no_binary_name(true).arg(probe);
    match probe_cmd.try_get_matches_from([format!("--value={v}")]) {
        Ok(_) => Ok(()),
        Err(e) => {
            if let Some(source) = std::error::Error::source(&e) {
                return Err(source.to_string());
            }
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("").trim_start_matches("error: ");
            let possible = text.lines().find(|l| l.contains("possible values")).map(str::trim);
            Err(match possible {
                Some(p) => format!("not accepted ({p})"),
                None => first.replace(" for '--value <VALUE>'", ""),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[derive(clap::Parser, Debug)]
    #[command(name = "t")]
    struct T {
        #[command(subcommand)]
        cmd: Sub,
    }

    #[derive(clap::Subcommand, Debug)]
    enum Sub {
        Serve(Serve),
        Tool(Tool),
    }

    #[derive(clap::Args, Debug)]
    struct Serve {
        #[arg(long)]
        zz_cluster: PathBuf,
        #[arg(long, default_value_t = 5000)]
        zz_timeout_ms: u64,
        #[arg(long, value_delimiter = ',')]
        zz_catalog: Vec<String>,
        #[arg(long = "zz-domain")]
        zz_domains: Vec<String>,
        #[arg(long)]
        zz_json: bool,
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        zz_client_first: bool,
        #[arg(long)]
        zz_listen: Option<std::net::SocketAddr>,
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        zz_offset: i64,
    }

    #[derive(clap::Args, Debug)]
    struct Tool {
        #[arg(long, env = "SILLOK_ZZ_OWN_NAME", global = true)]
        zz_key: Option<String>,
        #[command(subcommand)]
        cmd: ToolCmd,
    }

    #[derive(clap::Subcommand, Debug)]
    enum ToolCmd {
        Status {
            #[arg(long)]
            zz_watch: bool,
        },
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn parse(args: &[&str], config: &tempfile::NamedTempFile) -> anyhow::Result<Result<T, clap::Error>> {
        let mut argv: Vec<OsString> = vec!["t".into()];
        argv.extend(args.iter().map(OsString::from));
        argv.push("--config".into());
        argv.push(config.path().into());
        try_parse_from::<T>(argv)
    }

    fn serve(args: &[&str], config: &tempfile::NamedTempFile) -> Serve {
        match parse(args, config).unwrap().unwrap().cmd {
            Sub::Serve(s) => s,
            Sub::Tool(_) => panic!("not serve"),
        }
    }

    #[test]
    fn file_values_are_defaults_and_the_command_line_wins() {
        let f = file(
            "zz-cluster = \"/etc/sillok/cluster.json\"\nzz_timeout_ms = 750\nzz-catalog = [\"a:1\", \"b:2\"]\n\
             zz-domain = [\"s3.example.com\", \"s3.example.net\"]\nzz-json = true\nzz-client-first = false\n\
             zz-listen = \"0.0.0.0:9000\"\nzz-offset = -5\n",
        );
        let s = serve(&["serve"], &f);
        // `--zz-cluster` is required: the file's value satisfies it.
        assert_eq!(s.zz_cluster, PathBuf::from("/etc/sillok/cluster.json"));
        assert_eq!(s.zz_timeout_ms, 750);
        assert_eq!(s.zz_catalog, ["a:1", "b:2"]);
        assert_eq!(s.zz_domains, ["s3.example.com", "s3.example.net"]);
        assert!(s.zz_json);
        assert!(!s.zz_client_first);
        assert_eq!(s.zz_listen, Some("0.0.0.0:9000".parse().unwrap()));
        assert_eq!(s.zz_offset, -5);

        let s = serve(
            &["serve", "--zz-timeout-ms", "9", "--zz-catalog", "c:3", "--zz-domain=x.test", "--zz-client-first=true"],
            &f,
        );
        assert_eq!(s.zz_timeout_ms, 9);
        assert_eq!(s.zz_catalog, ["c:3"]);
        assert_eq!(s.zz_domains, ["x.test"]);
        assert!(s.zz_client_first);
        assert_eq!(s.zz_cluster, PathBuf::from("/etc/sillok/cluster.json"));

        // A comma-separated string for a comma-separated list; an empty file.
        let s = serve(&["serve"], &file("zz-cluster = \"c\"\nzz-catalog = \"a:1,b:2\"\n"));
        assert_eq!(s.zz_catalog, ["a:1", "b:2"]);
        assert_eq!(s.zz_timeout_ms, 5000, "the built-in default");
        let e = parse(&["serve"], &file("")).unwrap().unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn nested_subcommands_and_global_flags_take_file_values() {
        let f = file("zz-key = \"AKID\"\nzz-watch = true\n");
        match parse(&["tool", "status"], &f).unwrap().unwrap().cmd {
            Sub::Tool(t) => {
                assert_eq!(t.zz_key.as_deref(), Some("AKID"));
                assert!(matches!(t.cmd, ToolCmd::Status { zz_watch: true }));
            }
            Sub::Serve(_) => panic!("not tool"),
        }
    }

    #[test]
    fn unknown_keys_and_wrong_values_name_the_file_and_the_key() {
        let cases = [
            ("zz-cluster = \"c\"\nzz-timeout = 5\n", "unknown key `zz-timeout`"),
            ("zz-cluster = \"c\"\nzz-timeout-ms = \"soon\"\n", "`zz-timeout-ms` = \"soon\""),
            ("zz-cluster = \"c\"\nzz-timeout-ms = -1\n", "`zz-timeout-ms` = \"-1\""),
            ("zz-cluster = \"c\"\nzz-timeout-ms = [1, 2]\n", "takes one value, not a list"),
            ("zz-cluster = \"c\"\nzz-json = \"yes\"\n", "`zz-json` = \"yes\""),
            ("zz-cluster = \"c\"\nzz-listen = \"nowhere\"\n", "`zz-listen` = \"nowhere\""),
            ("zz-cluster = \"c\"\n[zz-json]\nx = 1\n", "a table is not a value"),
            ("zz-cluster = \"c\"\nzz_json = true\nzz-json = false\n", "twice"),
            ("zz-cluster = \"c\"\nconfig = \"other.toml\"\n", "cannot be set in a config file"),
            ("zz-cluster = \"c\n", "not valid TOML"),
            ("zz-watch = true\nzz-cluster = \"c\"\n", "unknown key `zz-watch`"),
        ];
        for (text, wanted) in cases {
            let f = file(text);
            let e = match parse(&["serve"], &f) {
                Err(e) => format!("{e:#}"),
                Ok(r) => panic!("{text:?} was accepted: {:?}", r.map(|_| ())),
            };
            assert!(e.contains(wanted), "{text:?}: {e}");
            assert!(e.contains(&f.path().display().to_string()), "{text:?}: {e}");
        }
        let e = try_parse_from::<T>(vec!["t".into(), "serve".into(), "--config".into(), "/nonexistent/x.toml".into()])
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(e.contains("cannot read the config file /nonexistent/x.toml"), "{e}");
    }

    #[test]
    fn every_flag_gets_its_variable_and_help_shows_it() {
        let mut vars = Vec::new();
        let mut cmd = with_env(<T as clap::CommandFactory>::command(), &mut vars, true);
        for v in ["SILLOK_ZZ_TIMEOUT_MS", "SILLOK_ZZ_CLIENT_FIRST", "SILLOK_ZZ_DOMAIN", "SILLOK_ZZ_OWN_NAME"] {
            assert!(vars.iter().any(|x| x == v), "{v} not in {vars:?}");
        }
        assert!(!vars.iter().any(|x| x == "SILLOK_HELP" || x == "SILLOK_ZZ_KEY"), "{vars:?}");
        let help = cmd.find_subcommand_mut("serve").unwrap().render_long_help().to_string();
        assert!(help.contains("SILLOK_ZZ_TIMEOUT_MS"), "{help}");
        assert!(cmd.render_long_help().to_string().contains("[env: SILLOK_CONFIG"));
    }
}
