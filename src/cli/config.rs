//! `chaff serve --config FILE`: every `serve` flag can be set in one TOML
//! file, keys named as the flags (`max-message-bytes = "10MiB"`,
//! `data = "/var/lib/chaff"`). Precedence: flag > environment > file >
//! default. Unknown keys are an error naming the key, and each file value
//! is checked by the flag's own parser, so a bad value names the file, the
//! key and what is wrong. `--print-config` shows the effective values and
//! where each came from.
//!
//! How: clap parses the command line (flags, environment, defaults); each
//! file key whose flag still holds its default is then appended as
//! `--key value` and the whole is parsed again. One parser, one set of
//! checks, whatever the source.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};

use super::{Cli, Command};

/// One effective `serve` setting and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Origin {
    pub(crate) key: String,
    pub(crate) value: String,
    pub(crate) from: String,
}

/// Flags that are about reading the configuration, not part of it.
const NOT_IN_FILE: &[&str] = &["config", "print-config", "help"];

/// Parses the process's command line, with `serve`'s config file applied.
/// Help, version and usage errors exit as clap does; a bad config file
/// exits with status 2 and a line naming the file and key.
pub fn parse() -> Cli {
    match parse_from(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("error: {}", super::error_line(&e));
            std::process::exit(2);
        }
    }
}

fn parse_from(mut args: Vec<OsString>) -> anyhow::Result<Cli> {
    let matches = Cli::command().get_matches_from(args.clone());
    refuse_connect_flags(&matches)?;
    let Some(("serve", serve)) = matches.subcommand() else {
        return Ok(Cli::from_arg_matches(&matches)?);
    };
    let file = serve.get_one::<PathBuf>("config").cloned();
    let mut from_file = BTreeSet::new();
    if let Some(path) = &file {
        for (key, value) in read(path)? {
            let id = arg_id(&key).ok_or_else(|| {
                anyhow::anyhow!(
                    "config file {}: unknown key `{key}`; the keys are `chaff serve` flags \
                     without the dashes: {}",
                    path.display(),
                    keys().join(", ")
                )
            })?;
            let switch = is_switch(&key);
            if switch {
                check_switch(path, &key, &value)?;
            } else {
                check(path, &key, &value)?;
            }
            // A flag or an environment variable overrides the file.
            if matches!(
                serve.value_source(&id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            ) {
                continue;
            }
            if switch {
                // `insecure = true` is the flag given; `false`, its absence.
                if value == "true" {
                    args.push(format!("--{key}").into());
                    from_file.insert(key);
                }
                continue;
            }
            args.push(format!("--{key}").into());
            args.push(value.into());
            from_file.insert(key);
        }
    }
    let matches = Cli::command().try_get_matches_from(&args)?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    if let (Command::Serve(a), Some(serve)) =
        (&mut cli.command, matches.subcommand_matches("serve"))
    {
        a.origins = origins(serve, &from_file, file.as_deref());
    }
    Ok(cli)
}

/// A connection flag (`--token`, `--tls-ca`, …) typed on the command line
/// of a command that never connects ([`super::trust::NOT_CLIENTS`]) is
/// an error, not silently ignored: `chaff serve --token K` looks like it
/// protects the server and does nothing. From the environment they are
/// fine (a shell set up for client commands).
fn refuse_connect_flags(matches: &ArgMatches) -> anyhow::Result<()> {
    let Some((name, sub)) = matches.subcommand() else {
        return Ok(());
    };
    if !super::trust::NOT_CLIENTS.contains(&name) {
        return Ok(());
    }
    // `chaff keys create` and friends: the flags land on the innermost.
    let mut innermost = sub;
    while let Some((_, next)) = innermost.subcommand() {
        innermost = next;
    }
    // The flags as `ConnectArgs` declares them, so none is missed.
    let connect =
        <super::trust::ConnectArgs as clap::Args>::augment_args(clap::Command::new("connect"));
    for arg in connect.get_arguments() {
        let id = arg.get_id().as_str();
        let flag = format!("--{}", arg.get_long().unwrap_or(id));
        let typed = [matches, sub, innermost]
            .iter()
            .any(|m| matches!(m.value_source(id), Some(ValueSource::CommandLine)));
        if typed {
            bail!(
                "{flag} is for the commands that connect to a chaff server (score, train, …); \
                 `chaff {name}` does not{}",
                if name == "serve" {
                    ": the server's keys are in its keys file (`chaff keys create`), its \
                     certificate in --tls-cert/--tls-key, its client CA in --tls-client-ca"
                } else {
                    ""
                }
            );
        }
    }
    Ok(())
}

/// The file's keys and values, as the strings a flag would take.
fn read(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("config file {} is not valid TOML", path.display()))?;
    let mut out = Vec::new();
    for (key, value) in table {
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => bail!(
                "config file {}: `{key}` is a {}; give a string or a number",
                path.display(),
                other.type_str()
            ),
        };
        out.push((key, value));
    }
    Ok(out)
}

fn serve_command() -> clap::Command {
    Cli::command()
        .find_subcommand("serve")
        .cloned()
        .expect("serve is a subcommand")
}

/// The clap id of the `serve` flag named `key`, if a file may set it.
fn arg_id(key: &str) -> Option<String> {
    if NOT_IN_FILE.contains(&key) {
        return None;
    }
    serve_command()
        .get_arguments()
        .find(|a| a.get_long() == Some(key))
        .map(|a| a.get_id().to_string())
}

fn keys() -> Vec<String> {
    serve_command()
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|k| !NOT_IN_FILE.contains(k))
        .map(str::to_string)
        .collect()
}

/// A setting's value as printed (`--print-config`, errors): a Redis
/// password in `store` or `decision-store` as `***`.
fn shown(value: &str) -> String {
    if value.starts_with("redis://") {
        super::serve::redacted(value)
    } else {
        value.to_string()
    }
}

/// Whether the `serve` flag `key` is a switch (`--insecure`: given or
/// not, no value), set in the file as `key = true` or `false`.
fn is_switch(key: &str) -> bool {
    serve_command()
        .get_arguments()
        .find(|a| a.get_long() == Some(key))
        .is_some_and(|a| !a.get_action().takes_values())
}

/// A switch's file value must be a boolean.
fn check_switch(path: &Path, key: &str, value: &str) -> anyhow::Result<()> {
    if value != "true" && value != "false" {
        bail!(
            "config file {}: `{key} = {value:?}`: `{key}` is a switch; give true or false",
            path.display()
        );
    }
    Ok(())
}

/// Runs the flag's own parser on one file value.
fn check(path: &Path, key: &str, value: &str) -> anyhow::Result<()> {
    let flag = format!("--{key}");
    if let Err(e) = Cli::command().try_get_matches_from(["chaff", "serve", &flag, value]) {
        let text = e.to_string();
        let first = text.lines().next().unwrap_or_default();
        let shown = shown(value);
        bail!(
            "config file {}: `{key} = {shown:?}`: {}",
            path.display(),
            first.trim_start_matches("error: ")
        );
    }
    Ok(())
}

fn origins(serve: &ArgMatches, from_file: &BTreeSet<String>, file: Option<&Path>) -> Vec<Origin> {
    let mut out = Vec::new();
    for arg in serve_command().get_arguments() {
        let Some(key) = arg.get_long().filter(|k| !NOT_IN_FILE.contains(k)) else {
            continue;
        };
        let id = arg.get_id().as_str();
        let Some(raw) = serve.get_raw(id) else {
            // Listed all the same, so the output names every key there is.
            out.push(Origin {
                key: key.to_string(),
                value: String::new(),
                from: NOT_SET.to_string(),
            });
            continue;
        };
        let value = raw
            .map(|v| v.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(",");
        let value = shown(&value);
        let from = match serve.value_source(id) {
            Some(ValueSource::CommandLine) if from_file.contains(key) => {
                format!(
                    "file {}",
                    file.map_or(String::new(), |f| f.display().to_string())
                )
            }
            Some(ValueSource::CommandLine) => "flag".to_string(),
            Some(ValueSource::EnvVariable) => format!(
                "env {}",
                arg.get_env()
                    .map_or(String::new(), |e| e.to_string_lossy().into_owned())
            ),
            _ => "default".to_string(),
        };
        out.push(Origin {
            key: key.to_string(),
            value,
            from,
        });
    }
    out
}

/// Whether `value` written unquoted is TOML that [`read`] turns back into
/// exactly `value` (a number or a boolean); anything else is quoted, which
/// every flag's parser takes as well (`5.`, `007` or a u64 beyond TOML's
/// integers would not read back bare).
fn bare_reads_back(value: &str) -> bool {
    let Ok(table) = format!("v = {value}").parse::<toml::Table>() else {
        return false;
    };
    match table.get("v") {
        Some(toml::Value::Integer(i)) => i.to_string() == value,
        Some(toml::Value::Float(f)) => f.to_string() == value,
        Some(toml::Value::Boolean(b)) => b.to_string() == value,
        _ => false,
    }
}

/// The `from` of a setting with no value and no default (an optional
/// flag left off, e.g. `--metrics-listen`).
const NOT_SET: &str = "not set";

/// The settings as a config file: `key = value  # from`; a setting with
/// no value as a comment, `# key  (not set)`. The output reads back as a
/// config file to the same settings, except a Redis password in `store`,
/// printed as `***`.
pub(crate) fn render(origins: &[Origin]) -> String {
    let mut out = String::from("# chaff serve: effective settings (flag > env > file > default)\n");
    for o in origins {
        if o.from == NOT_SET {
            out.push_str(&format!("# {}  ({NOT_SET})\n", o.key));
            continue;
        }
        let value = if bare_reads_back(&o.value) {
            o.value.clone()
        } else {
            format!("\"{}\"", o.value.replace('\\', "\\\\").replace('"', "\\\""))
        };
        out.push_str(&format!("{} = {value}  # {}\n", o.key, o.from));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> anyhow::Result<Vec<Origin>> {
        let cli = parse_from(args.iter().map(OsString::from).collect())?;
        match cli.command {
            Command::Serve(a) => Ok(a.origins),
            _ => unreachable!(),
        }
    }

    fn origin<'a>(o: &'a [Origin], key: &str) -> &'a Origin {
        o.iter().find(|o| o.key == key).unwrap()
    }

    #[test]
    fn a_flag_beats_the_file_which_beats_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("chaff.toml");
        std::fs::write(
            &file,
            "cache-mb = 64\nmax-message-bytes = \"2MiB\"\nlog = \"warn\"\n",
        )
        .unwrap();
        let f = file.to_str().unwrap();
        let o = parse(&["chaff", "serve", "--config", f, "--cache-mb", "32"]).unwrap();
        assert_eq!(origin(&o, "cache-mb").value, "32");
        assert_eq!(origin(&o, "cache-mb").from, "flag");
        assert_eq!(origin(&o, "max-message-bytes").value, "2MiB");
        assert_eq!(origin(&o, "max-message-bytes").from, format!("file {f}"));
        assert_eq!(origin(&o, "shutdown-grace").from, "default");
        let text = render(&o);
        assert!(text.contains("cache-mb = 32  # flag"), "{text}");
        assert!(text.contains("log = \"warn\"  # file"), "{text}");
    }

    #[test]
    fn a_switch_is_set_in_the_file_as_a_boolean() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("chaff.toml");
        let f = file.to_str().unwrap();
        std::fs::write(&file, "insecure = true\n").unwrap();
        let o = parse(&["chaff", "serve", "--config", f]).unwrap();
        assert_eq!(origin(&o, "insecure").value, "true");
        assert_eq!(origin(&o, "insecure").from, format!("file {f}"));
        std::fs::write(&file, "insecure = false\n").unwrap();
        let o = parse(&["chaff", "serve", "--config", f]).unwrap();
        assert_eq!(origin(&o, "insecure").value, "false");
        std::fs::write(&file, "insecure = \"yes\"\n").unwrap();
        let err = parse(&["chaff", "serve", "--config", f])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`insecure` is a switch; give true or false"),
            "{err}"
        );
    }

    #[test]
    fn print_config_reads_back_as_a_config_file_to_the_same_settings() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("first.toml");
        std::fs::write(
            &first,
            "insecure = true\nmax-message-bytes = \"2MiB\"\nlog = \"warn\"\nheader-veto-at = 7\n",
        )
        .unwrap();
        let a = parse(&["chaff", "serve", "--config", first.to_str().unwrap()]).unwrap();
        let text = render(&a);
        // Every key is named, a key with no value as a comment.
        assert!(text.contains("# metrics-listen  (not set)"), "{text}");
        assert!(text.contains("header-strength = 0.02  # default"), "{text}");
        let again = dir.path().join("again.toml");
        std::fs::write(&again, &text).unwrap();
        let b = parse(&["chaff", "serve", "--config", again.to_str().unwrap()]).unwrap();
        let values = |o: &[Origin]| {
            o.iter()
                .map(|o| (o.key.clone(), o.value.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(values(&a), values(&b), "{text}");
        // Values that look like numbers but are not TOML's stay quoted.
        for (value, bare) in [
            ("5", true),
            ("0.02", true),
            ("true", true),
            ("5.", false),
            ("007", false),
            ("18446744073709551615", false),
            ("10MiB", false),
        ] {
            assert_eq!(bare_reads_back(value), bare, "{value}");
        }
        assert_eq!(origin(&b, "insecure").value, "true");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("chaff.toml");
        std::fs::write(&file, "max-mesage-bytes = 5\n").unwrap();
        let f = file.to_str().unwrap();
        let err = parse(&["chaff", "serve", "--config", f])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown key `max-mesage-bytes`"), "{err}");
        std::fs::write(&file, "model-memory = \"0\"\n").unwrap();
        let err = parse(&["chaff", "serve", "--config", f])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`model-memory = \"0\"`"), "{err}");
        assert!(err.contains("at least 1MiB"), "{err}");
    }
}
