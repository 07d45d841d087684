//! Every template of the releases in `deploy/software`, rendered with hostile values for
//! every variable that comes from the master (instance parameters, titles, addresses...):
//! the output must be inert. Shell files are *run* with `sh` (and `bash`) with the
//! programs they exec replaced by stubs that record their arguments; TOML and JSON files
//! are parsed back. Each is compared with a rendering where every variable is a plain
//! marker word: with the markers replaced by the hostile values, the stubs' arguments,
//! the variables a sourced file sets, and the parsed documents must be the same, byte for
//! byte, and no command hidden in a value may have run.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use slapgrid::native::{FileKind, Manifest, ParamType, Template};

const RELEASES: &[&str] = &["hello", "slapos-master", "tunnel"];

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/software")
}

/// The release's manifest with its `@...@` placeholders filled as a supplier would.
fn manifest_text(release: &str) -> String {
    let text = std::fs::read_to_string(deploy().join(release).join("software.toml")).unwrap();
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find('@') {
        let after = &rest[start + 1..];
        match after.find('@') {
            Some(end)
                if end > 0
                    && after[..end]
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_') =>
            {
                out.push_str(&rest[..start]);
                out.push_str(&"0".repeat(64));
                rest = &after[end + 1..];
            }
            _ => {
                out.push_str(&rest[..=start]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Values that would run `touch <pwned>` (or glob, or pass as options) if any reached a
/// shell unescaped, or change a TOML/JSON document's structure.
fn hostile(pwned: &Path) -> Vec<String> {
    let p = pwned.display();
    vec![
        format!("x'\"$(touch {p})\"'"),
        format!("'; touch {p}; '"),
        format!("\"; touch {p}; \""),
        format!("`touch {p}`"),
        format!("$(touch {p})"),
        format!("a && touch {p}"),
        format!("a; touch {p}"),
        format!("a\ntouch {p}\n"),
        format!("a | touch {p} #"),
        format!("'\\''$(touch {p})'\\''"),
        format!("\"]\n[evil]\nx = \"$(touch {p})"),
        format!("\"}}, \"evil\": {{\"x\": \"$(touch {p})"),
        "*".into(),
        "-rf --help".into(),
        "\\' \\\" \\\\ \\n".into(),
        "${HOME} $HOME ~root".into(),
        String::new(),
        "\ttab and é \u{2028}".into(),
        format!("{}'$(touch {p})'", "A".repeat(100 * 1024)),
    ]
}

fn marker(k: usize) -> String {
    format!("MARKER{k}X")
}

/// Replaces every marker of `markers` (marker -> value) in `s`.
fn unmark(s: &str, markers: &[(String, String)]) -> String {
    let mut out = s.to_owned();
    for (m, v) in markers {
        out = out.replace(m, v);
    }
    out
}

/// Everything a shell file did: the stubs' argument lists, or (a sourced file) the
/// variables it set.
fn run_shell(file: &Path, partition: &Path, calls: &Path, shell: &str) -> Vec<Vec<String>> {
    let _ = std::fs::remove_dir_all(calls);
    std::fs::create_dir_all(calls).unwrap();
    let text = std::fs::read_to_string(file).unwrap();
    let mut command = Command::new(shell);
    if text.starts_with("#!") {
        command.arg(file);
    } else {
        command
            .arg("-c")
            .arg("set -a; . \"$1\"; exec env -0")
            .arg(shell)
            .arg(file);
    }
    let out = command
        .current_dir(partition)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", partition)
        .env("STUB_CALLS", calls)
        .output()
        .unwrap();
    let mut runs: Vec<Vec<String>> = Vec::new();
    if !text.starts_with("#!") {
        assert!(out.status.success(), "{}: {out:?}", file.display());
        let mut vars: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .split('\0')
            .filter(|v| !v.is_empty() && !v.starts_with("_="))
            .map(str::to_owned)
            .collect();
        vars.sort();
        runs.push(vars);
    }
    let mut names: Vec<PathBuf> = std::fs::read_dir(calls)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for call in names {
        let bytes = std::fs::read(&call).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        let mut args: Vec<String> = text.split('\0').map(str::to_owned).collect();
        args.pop(); // after the last NUL
        runs.push(args);
    }
    runs
}

/// A program stub at `path`: each run writes its name and arguments, NUL-terminated, to
/// a new file of `$STUB_CALLS`.
fn stub(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(
        path,
        "#!/bin/sh\nf=$(mktemp \"$STUB_CALLS/call.XXXXXX\")\n\
         { printf '%s\\0' \"${0##*/}\"; for a in \"$@\"; do printf '%s\\0' \"$a\"; done; } > \"$f\"\n",
    )
    .unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn shells() -> Vec<&'static str> {
    ["sh", "bash"]
        .into_iter()
        .filter(|s| Command::new(s).arg("-c").arg("true").status().is_ok())
        .collect()
}

/// A TOML or JSON document with the markers of its strings replaced.
fn unmark_toml(v: &toml::Value, m: &[(String, String)]) -> toml::Value {
    match v {
        toml::Value::String(s) => toml::Value::String(unmark(s, m)),
        toml::Value::Array(a) => toml::Value::Array(a.iter().map(|x| unmark_toml(x, m)).collect()),
        toml::Value::Table(t) => toml::Value::Table(
            t.iter()
                .map(|(k, x)| (unmark(k, m), unmark_toml(x, m)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn unmark_json(v: &serde_json::Value, m: &[(String, String)]) -> serde_json::Value {
    match v {
        serde_json::Value::String(s) => serde_json::Value::String(unmark(s, m)),
        serde_json::Value::Array(a) => a.iter().map(|x| unmark_json(x, m)).collect(),
        serde_json::Value::Object(o) => o
            .iter()
            .map(|(k, x)| (unmark(k, m), unmark_json(x, m)))
            .collect(),
        other => other.clone(),
    }
}

/// The variables of every template of `manifest` (files and connection parameters, of
/// every software type).
fn variables(manifest: &Manifest) -> Vec<String> {
    let mut names = std::collections::BTreeSet::new();
    for f in &manifest.instance.file {
        let t =
            Template::compile(f.content.as_deref().unwrap_or_default(), f.kind(), &f.path).unwrap();
        names.extend(t.variables().map(str::to_owned));
    }
    for (k, t) in manifest.instance.connection.all() {
        let t = Template::compile(t, FileKind::Plain, &k).unwrap();
        names.extend(t.variables().map(str::to_owned));
    }
    names.into_iter().collect()
}

/// The software types the release deploys (one, `default`, for a release that names
/// none).
fn software_types(manifest: &Manifest) -> Vec<String> {
    let types: Vec<String> = manifest
        .software_types()
        .into_iter()
        .map(str::to_owned)
        .collect();
    if types.is_empty() {
        vec!["default".into()]
    } else {
        types
    }
}

fn is_integer(manifest: &Manifest, var: &str) -> bool {
    var.strip_prefix("param.")
        .and_then(|p| manifest.instance.parameter.get(p))
        .is_some_and(|s| s.kind == ParamType::Integer)
}

/// What rendering `manifest` with `vars` produced, per file (after running / parsing).
#[derive(Debug, PartialEq)]
enum Outcome {
    Shell(Vec<Vec<String>>),
    Toml(toml::Value),
    Json(serde_json::Value),
    Plain(String),
}

struct Site {
    _dir: tempfile::TempDir,
    root: PathBuf,
    software: PathBuf,
    partition: PathBuf,
    pwned: PathBuf,
}

/// A temporary software and partition directory, their names hostile too (quotes,
/// spaces, `$(…)`), with a stub for every program the release installs.
fn site(manifest: &Manifest) -> Site {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let pwned = root.join("pwned");
    let software = root.join(format!("sw 'q' \"d\" $(touch {})", pwned.display()));
    let partition = root.join(format!("part ' \" `touch {}`", pwned.display()));
    for a in &manifest.artifact {
        stub(&software.join(&a.dest));
    }
    std::fs::create_dir_all(partition.join("var")).unwrap();
    // The hello promise finds its heartbeat at once.
    std::fs::write(partition.join("var/heartbeat"), "now").unwrap();
    Site {
        _dir: dir,
        root,
        software,
        partition,
        pwned,
    }
}

/// What an instance of `software_type` gets: its files and connection parameters.
fn render_all(
    manifest: &Manifest,
    software_type: &str,
    site: &Site,
    vars: &BTreeMap<String, String>,
    shell: &str,
) -> BTreeMap<String, Outcome> {
    let mut out = BTreeMap::new();
    manifest.check_parameters(vars).unwrap();
    for f in manifest.files_for(software_type).unwrap() {
        let text = manifest
            .render_file(f, None, vars)
            .unwrap_or_else(|e| panic!("{}: {e}", f.path));
        let outcome = match f.kind() {
            FileKind::Shell => {
                let file = site.root.join("rendered");
                std::fs::write(&file, &text).unwrap();
                Outcome::Shell(run_shell(
                    &file,
                    &site.partition,
                    &site.root.join("calls"),
                    shell,
                ))
            }
            FileKind::Toml => Outcome::Toml(
                toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", f.path)),
            ),
            FileKind::Json => Outcome::Json(serde_json::from_str(&text).unwrap()),
            FileKind::Plain => Outcome::Plain(text),
        };
        out.insert(f.path.clone(), outcome);
    }
    for (k, v) in manifest.render_connection(software_type, vars).unwrap() {
        out.insert(format!("connection {k}"), Outcome::Plain(v));
    }
    out
}

fn unmark_outcome(o: &Outcome, m: &[(String, String)]) -> Outcome {
    match o {
        Outcome::Shell(runs) => Outcome::Shell(
            runs.iter()
                .map(|r| r.iter().map(|a| unmark(a, m)).collect())
                .collect(),
        ),
        Outcome::Toml(v) => Outcome::Toml(unmark_toml(v, m)),
        Outcome::Json(v) => Outcome::Json(unmark_json(v, m)),
        Outcome::Plain(s) => Outcome::Plain(unmark(s, m)),
    }
}

#[test]
fn every_deploy_template_keeps_hostile_values_inert() {
    for release in RELEASES {
        let manifest = Manifest::parse(&manifest_text(release)).unwrap();
        let names = variables(&manifest);
        let site = site(&manifest);
        let values = hostile(&site.pwned);
        for (shell, software_type) in shells()
            .into_iter()
            .flat_map(|sh| software_types(&manifest).into_iter().map(move |t| (sh, t)))
        {
            for round in 0..values.len() {
                let mut marked = BTreeMap::new();
                let mut real = BTreeMap::new();
                let mut markers = Vec::new();
                for (k, name) in names.iter().enumerate() {
                    let (m, v) = match name.as_str() {
                        "software_path" => (site.software.display().to_string(), None),
                        "partition_path" => (site.partition.display().to_string(), None),
                        _ if is_integer(&manifest, name) => (format!("{}", 7000 + k), None),
                        _ => (marker(k), Some(values[(k + round) % values.len()].clone())),
                    };
                    real.insert(name.clone(), v.clone().unwrap_or_else(|| m.clone()));
                    if let Some(v) = v {
                        markers.push((m.clone(), v));
                    }
                    marked.insert(name.clone(), m);
                }
                // Longest markers first (MARKER10X before MARKER1X is not needed with
                // the X, but keeps replacements independent of order).
                markers.sort_by_key(|(m, _)| std::cmp::Reverse(m.len()));
                let expected: BTreeMap<String, Outcome> =
                    render_all(&manifest, &software_type, &site, &marked, shell)
                        .iter()
                        .map(|(k, o)| (k.clone(), unmark_outcome(o, &markers)))
                        .collect();
                let got = render_all(&manifest, &software_type, &site, &real, shell);
                for f in manifest.files_for(&software_type).unwrap() {
                    // The stubs did run: the comparison is not between two empty lists.
                    if f.content
                        .as_deref()
                        .is_some_and(|c| c.contains("exec {{software_path}}"))
                    {
                        assert!(
                            matches!(&expected[&f.path], Outcome::Shell(runs) if !runs.is_empty()),
                            "{release} ({software_type}) {}: no stub ran",
                            f.path
                        );
                    }
                }
                for (file, want) in &expected {
                    assert_eq!(
                        got.get(file),
                        Some(want),
                        "{release} ({software_type}) {file} with {shell}, round {round}"
                    );
                }
                assert!(
                    !site.pwned.exists(),
                    "{release} ({software_type}), {shell}, round {round}: a value ran a command"
                );
            }
        }
    }
}

#[test]
fn hostile_values_are_refused_where_they_cannot_be_escaped() {
    for release in RELEASES {
        let manifest = Manifest::parse(&manifest_text(release)).unwrap();
        let names = variables(&manifest);
        let ok: BTreeMap<String, String> = names
            .iter()
            .map(|n| {
                let v = if is_integer(&manifest, n) { "7" } else { "v" };
                (n.clone(), v.to_string())
            })
            .collect();
        for name in &names {
            // NUL: refused by every file that uses the variable, whatever its kind.
            let mut vars = ok.clone();
            vars.insert(name.clone(), "a\0b".into());
            for f in &manifest.instance.file {
                let uses =
                    Template::compile(f.content.as_deref().unwrap_or_default(), f.kind(), &f.path)
                        .unwrap()
                        .variables()
                        .any(|v| v == name);
                if uses {
                    let e = manifest
                        .render_file(f, None, &vars)
                        .unwrap_err()
                        .to_string();
                    assert!(
                        e.contains("NUL") && e.contains(name.as_str()),
                        "{release} {}: {e}",
                        f.path
                    );
                }
            }
            // Typed parameters: anything but an integer is refused before any file.
            if is_integer(&manifest, name) {
                for bad in ["7; touch /tmp/x", "7\n", "", "0x10", "1e3"] {
                    vars.insert(name.clone(), bad.into());
                    let e = manifest.check_parameters(&vars).unwrap_err().to_string();
                    assert!(
                        e.contains(name.as_str()) && e.contains("integer"),
                        "{release}: {e}"
                    );
                }
            }
        }
    }
}

/// The script behind the slapos-master release's services, on both sides (a `replica`
/// instance and a `gateway` one): the values it puts on a command line arrive whole
/// (`--token=<value>`), and those it would write into the gateway's configuration or
/// split into lists are checked first.
#[test]
fn slapos_master_script_passes_values_whole_and_checks_their_shape() {
    let manifest = Manifest::parse(&manifest_text("slapos-master")).unwrap();
    assert_eq!(software_types(&manifest), ["gateway", "replica"]);
    let site = site(&manifest);
    let script = site.software.join("bin/slapos-master");
    std::fs::copy(deploy().join("slapos-master/slapos-master.sh"), &script).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let tls = site.partition.join("etc/tls");
    std::fs::create_dir_all(&tls).unwrap();
    let base: BTreeMap<String, String> = [
        ("software_path", site.software.display().to_string()),
        ("partition_path", site.partition.display().to_string()),
        ("param.replica-id", "4".into()),
        ("ipv6", "2001:db8::4".into()),
        (
            "param.join-via",
            "[2001:db8::1]:7202,[2001:db8::2]:7202".into(),
        ),
        (
            "param.masters",
            "[2001:db8::4]:7202,[2001:db8::1]:7202,[2001:db8::2]:7202".into(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    // The environment file of an instance of `software_type`.
    let write_env = |software_type: &str, vars: &BTreeMap<String, String>| {
        let f = manifest
            .files_for(software_type)
            .unwrap()
            .into_iter()
            .find(|f| f.path == "etc/slapos-master.env")
            .unwrap();
        let text = manifest.render_file(f, None, vars).unwrap();
        std::fs::write(site.partition.join("etc/slapos-master.env"), text).unwrap();
    };
    let run = |cmd: &str| {
        let calls = site.root.join("calls");
        let _ = std::fs::remove_dir_all(&calls);
        std::fs::create_dir_all(&calls).unwrap();
        let out = Command::new("sh")
            .arg(&script)
            .arg(&site.partition)
            .arg(cmd)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("STUB_CALLS", &calls)
            .output()
            .unwrap();
        let mut args = Vec::new();
        for call in std::fs::read_dir(&calls).unwrap() {
            let text = String::from_utf8(std::fs::read(call.unwrap().path()).unwrap()).unwrap();
            let mut a: Vec<String> = text.split('\0').map(str::to_owned).collect();
            a.pop();
            args.push(a);
        }
        (out, args)
    };
    for value in hostile(&site.pwned) {
        // Tokens and the enrollment gateway are passed on whole, each side enrolling its
        // own identity only.
        for (software_type, token, cmd, identity) in [
            (
                "replica",
                "param.replica-token",
                "enroll-replica",
                "replica:4",
            ),
            (
                "gateway",
                "param.gateway-token",
                "enroll-gateway",
                "gateway:r4",
            ),
        ] {
            let mut vars = base.clone();
            vars.insert(token.into(), value.clone());
            vars.insert("param.enroll-gateway".into(), value.clone());
            write_env(software_type, &vars);
            let _ = std::fs::remove_file(tls.join("replica-4.crt"));
            let _ = std::fs::remove_file(tls.join("gateway-r4.crt"));
            let (out, calls) = run(cmd);
            assert!(out.status.success(), "{out:?}");
            assert_eq!(calls.len(), 1, "{calls:?}");
            let call = &calls[0];
            assert!(call.contains(&format!("--token={value}")), "{call:?}");
            assert!(call.contains(&format!("--gateway={value}")), "{call:?}");
            assert!(call.contains(&format!("--identity={identity}")), "{call:?}");
        }
        // Lists and addresses that go into gateway.toml or a command line are refused
        // unless well-formed.
        for (software_type, param, cmd) in [
            ("gateway", "param.masters", "gateway"),
            ("gateway", "ipv6", "gateway"),
            ("replica", "param.join-via", "join"),
            ("replica", "ipv6", "join"),
        ] {
            let mut vars = base.clone();
            vars.insert(param.into(), value.clone());
            write_env(software_type, &vars);
            let _ = std::fs::remove_file(site.partition.join("etc/gateway.toml"));
            std::fs::write(tls.join("gateway-r4.crt"), "cert").unwrap();
            std::fs::write(tls.join("replica-4.crt"), "cert").unwrap();
            let (out, calls) = run(cmd);
            // What the script accepts: IPv6 characters; lists split on commas and blanks
            // into names or addresses.
            let allowed = |c: char| match param {
                "ipv6" => c.is_ascii_hexdigit() || ":.".contains(c),
                _ => c.is_ascii_alphanumeric() || ".:[]-".contains(c),
            };
            let shaped = if param == "ipv6" {
                !value.is_empty() && value.chars().all(allowed)
            } else {
                !(cmd == "gateway" && value.is_empty())
                    && value
                        .split([',', ' ', '\t', '\n'])
                        .all(|t| t.chars().all(allowed))
            };
            if !shaped {
                assert!(
                    !out.status.success(),
                    "{software_type} {param} = {value:?} accepted"
                );
                assert!(
                    String::from_utf8_lossy(&out.stderr).contains("refusing"),
                    "{out:?}"
                );
                assert!(calls.is_empty() && !site.partition.join("etc/gateway.toml").exists());
            }
        }
        // The backups' directory reaches a command line only as one absolute path.
        let mut vars = base.clone();
        vars.insert("param.backup-every-minutes".into(), "5".into());
        vars.insert("param.backup-dir".into(), value.clone());
        write_env("replica", &vars);
        std::fs::write(tls.join("replica-4.crt"), "cert").unwrap();
        let (out, calls) = run("backups");
        if value.starts_with('/') && !value.chars().any(|c| c.is_control()) {
            assert!(out.status.success(), "{out:?}");
            assert_eq!(calls.len(), 1, "{calls:?}");
            assert!(calls[0].contains(&format!("--dir={value}")), "{calls:?}");
        } else if !value.is_empty() {
            assert!(!out.status.success(), "backup-dir = {value:?} accepted");
            assert!(calls.is_empty(), "{calls:?}");
        }
        // The place backups are sent to: one https URL of plain characters, whole.
        let mut vars = base.clone();
        vars.insert("param.backup-every-minutes".into(), "5".into());
        vars.insert("param.backup-url".into(), value.clone());
        write_env("replica", &vars);
        let (out, calls) = run("backups");
        let plain = |c: char| c.is_ascii_alphanumeric() || ".:/_~%@[]-".contains(c);
        let url_ok = value
            .strip_prefix("https://")
            .is_some_and(|rest| !rest.is_empty() && value.chars().all(plain));
        if url_ok {
            assert!(out.status.success(), "{out:?}");
            assert!(calls[0].contains(&format!("--upload={value}")), "{calls:?}");
        } else if !value.is_empty() {
            assert!(!out.status.success(), "backup-url = {value:?} accepted");
            assert!(calls.is_empty(), "{calls:?}");
        }
        assert!(!site.pwned.exists(), "{value:?} ran a command");
    }
    for (url, accepted) in [
        ("https://[2001:db8::9]:8443/backups/", true),
        ("https://store.example/b/$(touch /tmp/x)", false),
        ("https://store.example/b/?sig=a&x=1", false),
        ("http://store.example/b/", false),
        ("https://", false),
    ] {
        let mut vars = base.clone();
        vars.insert("param.backup-every-minutes".into(), "5".into());
        vars.insert("param.backup-url".into(), url.into());
        write_env("replica", &vars);
        let (out, calls) = run("backups");
        assert_eq!(out.status.success(), accepted, "{url}: {out:?}");
        assert_eq!(
            calls
                .first()
                .is_some_and(|c| c.contains(&format!("--upload={url}"))),
            accepted,
            "{url}: {calls:?}"
        );
        let (out, calls) = run("backup-fresh");
        if accepted {
            assert!(
                calls[0].contains(&"--uploaded".to_string()),
                "{out:?} {calls:?}"
            );
        }
    }
    // Scheduled backups: none unless asked (the service idles, the promise holds); asked,
    // every N minutes into the partition, the promise's limit twice that plus 10.
    write_env("replica", &base);
    let (out, calls) = run("backup-fresh");
    assert!(
        out.status.success() && calls.is_empty(),
        "{out:?} {calls:?}"
    );
    let (out, calls) = run("backups");
    assert!(out.status.success(), "{out:?}");
    assert!(
        calls[0].contains(&"--every-secs=0".to_string()),
        "{calls:?}"
    );
    let mut vars = base.clone();
    vars.insert("param.backup-every-minutes".into(), "5".into());
    vars.insert("param.backup-keep".into(), "3".into());
    write_env("replica", &vars);
    let (out, calls) = run("backups");
    assert!(out.status.success(), "{out:?}");
    let srv = site.partition.join("srv/backups").display().to_string();
    for arg in [
        "--every-secs=300".to_string(),
        "--keep=3".into(),
        format!("--dir={srv}"),
        "--from-any".into(),
    ] {
        assert!(calls[0].contains(&arg), "{arg} not in {calls:?}");
    }
    let (out, calls) = run("backup-fresh");
    assert!(out.status.success(), "{out:?}");
    assert!(
        calls[0].contains(&"--max-secs=1200".to_string()),
        "{calls:?}"
    );
    // And well-formed values make a gateway configuration with exactly those entries,
    // its replica's first.
    write_env("gateway", &base);
    let (out, calls) = run("gateway");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(calls.len(), 1);
    let conf: toml::Table = std::fs::read_to_string(site.partition.join("etc/gateway.toml"))
        .unwrap()
        .parse()
        .unwrap();
    // No admins: the group records them, no gateway configuration names any.
    assert!(conf.get("slap").is_none(), "{conf:?}");
    let masters: Vec<&str> = conf["masters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    assert_eq!(
        masters,
        [
            "[2001:db8::4]:7202",
            "[2001:db8::1]:7202",
            "[2001:db8::2]:7202"
        ]
    );
    assert_eq!(conf["listen"].as_str(), Some("[2001:db8::4]:8443"));
    // It serves the releases published to it, and the one it runs.
    let releases = conf["releases"].as_table().expect("[releases]");
    assert_eq!(
        releases["dir"].as_str(),
        Some(site.partition.join("srv/releases").to_str().unwrap())
    );
    assert_eq!(
        releases["serve_installed"].as_array().unwrap()[0].as_str(),
        Some(site.software.to_str().unwrap())
    );
}

/// The tunnel release: each end's service runs `slapos tunnel` with every value whole
/// after its `--option=` (the `[...]` of an IPv6 address not globbed, even next to a file
/// the pattern would match), and publishes what the other end needs.
#[test]
fn tunnel_ends_get_their_values_whole_and_publish_what_the_other_end_needs() {
    let manifest = Manifest::parse(&manifest_text("tunnel")).unwrap();
    assert_eq!(software_types(&manifest), ["client", "server"]);
    let site = site(&manifest);
    // What `[2001:db8::2]` would match as a glob pattern, in the service's directory.
    std::fs::write(site.partition.join("--listen=2:11212"), "").unwrap();
    let vars: BTreeMap<String, String> = [
        ("software_path", site.software.display().to_string()),
        ("partition_path", site.partition.display().to_string()),
        (
            "software_release_url",
            "https://gw/software/x/software.toml".into(),
        ),
        ("computer_id", "COMP-1".into()),
        ("partition_id", "slappart2".into()),
        ("ipv6", "2001:db8::2".into()),
        ("ipv4", "10.0.0.2".into()),
        ("cert_file", "/srv/certs/slappart2.crt".into()),
        ("key_file", "/srv/certs/slappart2.key".into()),
        ("param.target", "127.0.0.1:11211".into()),
        (
            "param.allow",
            "partition:COMP-2:slappart3,partition:COMP-3:slappart0".into(),
        ),
        ("param.server-address", "[2001:db8::2]:11212".into()),
        ("param.server-identity", "partition:COMP-1:slappart2".into()),
        ("param.local-port", "11211".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let ca = format!("--cacert={}/etc/tls/group-ca.pem", site.partition.display());
    let slapos = "slapos".to_string();
    for (software_type, service, expected, connection) in [
        (
            "server",
            "etc/service/tunnel-server",
            vec![
                "tunnel",
                "server",
                "--listen=[2001:db8::2]:11212",
                "--target=127.0.0.1:11211",
                "--allow=partition:COMP-2:slappart3,partition:COMP-3:slappart0",
                "--cert=/srv/certs/slappart2.crt",
                "--key=/srv/certs/slappart2.key",
                &ca,
                "--max-concurrent-conns=1024",
            ],
            vec![
                ("server-address", "[2001:db8::2]:11212"),
                ("server-identity", "partition:COMP-1:slappart2"),
                (
                    "allow",
                    "partition:COMP-2:slappart3,partition:COMP-3:slappart0",
                ),
            ],
        ),
        (
            "client",
            "etc/service/tunnel-client",
            vec![
                "tunnel",
                "client",
                "--listen=10.0.0.2:11211",
                "--target=[2001:db8::2]:11212",
                "--server-identity=partition:COMP-1:slappart2",
                "--cert=/srv/certs/slappart2.crt",
                "--key=/srv/certs/slappart2.key",
                &ca,
                "--max-concurrent-conns=1024",
            ],
            vec![
                ("local-address", "10.0.0.2:11211"),
                ("client-identity", "partition:COMP-1:slappart2"),
                ("server-identity", "partition:COMP-1:slappart2"),
            ],
        ),
    ] {
        for shell in shells() {
            let got = render_all(&manifest, software_type, &site, &vars, shell);
            let mut want: Vec<String> = vec![slapos.clone()];
            want.extend(expected.iter().map(|s| s.to_string()));
            assert_eq!(
                got.get(service),
                Some(&Outcome::Shell(vec![want])),
                "{software_type} with {shell}"
            );
            for (k, v) in &connection {
                assert_eq!(
                    got.get(&format!("connection {k}")),
                    Some(&Outcome::Plain(v.to_string())),
                    "{software_type}: {k}"
                );
            }
        }
    }
}
