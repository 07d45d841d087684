//! Standalone format in a temporary directory (no user or network command runs: both
//! `alter_user` and `alter_network` are false, so these pass as root or not).

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use slapos_proto::marshal::Value;

use super::*;

fn config(root: &Path, amount: usize, extra: &str) -> NodeConfig {
    let text = format!(
        "[slapos]\ncomputer_id = COMP-TEST\nmaster_url = http://127.0.0.1:28080\n\
         software_root = {root}/soft\ninstance_root = {root}/inst\nroot_check = False\n\
         certificate_repository_path = {root}/etc/certs\n\n\
         [slapformat]\npartition_amount = {amount}\nalter_user = false\nalter_network = false\n\
         create_tap = false\ncomputer_xml = {root}/etc/slapos.xml\n\
         partition_has_ipv6_range = false\n{extra}",
        root = root.display()
    );
    NodeConfig::parse(&root.join("slapos.cfg"), &text).unwrap()
}

fn with_json(root: &Path) -> String {
    format!("computer_json = {}/etc/slapos.json\n", root.display())
}

/// (inode, mtime in ns, bytes) of every file under `dir`.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, i64, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path.clone());
            }
            let bytes = if meta.is_file() {
                std::fs::read(&path).unwrap()
            } else {
                Vec::new()
            };
            out.insert(
                path,
                (
                    meta.ino(),
                    meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
                    bytes,
                ),
            );
        }
    }
    out
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn standalone_format_creates_partitions_and_state() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let cfg = config(root, 2, &with_json(root));
    let out = format(&cfg, false).unwrap();
    assert!(out.changed);
    assert_eq!(out.partitions.len(), 2);
    let me = Identity::current();
    for (i, p) in out.partitions.iter().enumerate() {
        assert_eq!(p.reference, format!("slappart{i}"));
        assert_eq!(p.path, root.join(format!("inst/slappart{i}")));
        assert_eq!((p.uid, p.gid), (me.uid, me.gid));
        assert_eq!(p.user, me.name);
        assert_eq!((p.ipv4.as_str(), p.ipv6.as_str()), ("127.0.0.1", "::1"));
        assert_eq!(p.tap, None);
        assert_eq!(mode_of(&p.path), 0o750);
        let resource = p.path.join(".slapos-resource");
        assert_eq!(mode_of(&resource), 0o644);
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&resource).unwrap()).unwrap();
        assert_eq!(json["reference"], format!("slappart{i}"));
        assert_eq!(
            json["address_list"][1]["netmask"],
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
        );
        assert_eq!(json["ipv6_range"], serde_json::json!({}));
        assert_eq!(json["tap"]["name"], "");
        assert_eq!(json["tun"], serde_json::Value::Null);
        assert_eq!(
            json["user"]["additional_group_list"],
            serde_json::json!(["slapsoft"])
        );
    }
    assert_eq!(mode_of(&root.join("inst")), 0o755);
    assert_eq!(mode_of(&root.join("soft")), 0o755);
    assert_eq!(mode_of(&root.join("etc/certs")), 0o700);

    // The computer dict: what the master reads.
    let c = &out.computer;
    assert_eq!(
        c.dict_get("reference"),
        Some(&Value::Str("COMP-TEST".into()))
    );
    assert_eq!(c.dict_get("address"), Some(&Value::Str("127.0.0.1".into())));
    assert_eq!(
        c.dict_get("netmask"),
        Some(&Value::Str("255.255.255.255".into()))
    );
    assert_eq!(
        c.dict_get("partition_has_ipv6_range"),
        Some(&Value::Bool(false))
    );
    assert_eq!(
        c.dict_get("public_ipv4_address"),
        Some(&Value::Str(String::new()))
    );
    let list = c
        .dict_get("partition_list")
        .and_then(Value::as_list)
        .unwrap();
    assert_eq!(list.len(), 2);
    let addr = list[1]
        .dict_get("address_list")
        .and_then(Value::as_list)
        .unwrap();
    assert_eq!(
        addr[0].dict_get("addr"),
        Some(&Value::Str("127.0.0.1".into()))
    );
    assert_eq!(
        list[1].dict_get("tap").and_then(|t| t.dict_get("name")),
        Some(&Value::Str(String::new()))
    );

    // State files: the xml is the marshal encoding of the same dict, the json sorted with
    // indent 2.
    let xml = std::fs::read_to_string(root.join("etc/slapos.xml")).unwrap();
    assert_eq!(xml, slapos_proto::marshal::encode(c).unwrap());
    let json_text = std::fs::read_to_string(root.join("etc/slapos.json")).unwrap();
    assert!(
        json_text.starts_with("{\n  \"address\": \"127.0.0.1\",\n"),
        "{json_text}"
    );
}

#[test]
fn a_second_run_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let cfg = config(root, 3, &with_json(root));
    let first = format(&cfg, false).unwrap();
    assert!(first.changed);
    let before = snapshot(root);
    let second = format(&cfg, false).unwrap();
    assert!(!second.changed);
    assert_eq!(snapshot(root), before);
    assert_eq!(second.partitions, first.partitions);
    assert_eq!(second.computer, first.computer);
    // A dry run of a formatted node changes nothing either.
    assert!(!format(&cfg, true).unwrap().changed);
    assert_eq!(snapshot(root), before);
}

#[test]
fn a_dry_run_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let cfg = config(root, 2, &with_json(root));
    let out = format(&cfg, true).unwrap();
    assert!(out.changed);
    assert_eq!(out.partitions.len(), 2);
    assert!(snapshot(root).is_empty());
}

/// A smaller amount drops the last partitions when they hold nothing; one that holds
/// something refuses the whole run, which changes nothing.
#[test]
fn shrinking_drops_free_partitions_only() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    format(&config(root, 4, &with_json(root)), false).unwrap();
    // slappart3 is free: dropped, with its directory.
    let out = format(&config(root, 3, &with_json(root)), false).unwrap();
    assert_eq!(out.dropped, vec!["slappart3".to_string()]);
    assert_eq!(out.partitions.len(), 3);
    assert!(!root.join("inst/slappart3").exists());
    let state = std::fs::read_to_string(root.join("etc/slapos.json")).unwrap();
    assert!(
        !state.contains("slappart3") && state.contains("slappart2"),
        "{state}"
    );
    // slappart1 holds an instance's file: refused, nothing changed.
    std::fs::write(root.join("inst/slappart1/buildout.cfg"), "x").unwrap();
    let before = snapshot(root);
    let err = format(&config(root, 1, &with_json(root)), false).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(
            &err,
            FormatError::Shrink {
                configured: 1,
                existing: 3,
                in_use,
                ..
            } if in_use == "slappart1"
        ),
        "{text}"
    );
    assert!(text.contains("slappart1") && text.contains('3'), "{text}");
    assert_eq!(snapshot(root), before);
    // Also when only the xml state exists.
    std::fs::remove_file(root.join("etc/slapos.json")).unwrap();
    let before = snapshot(root);
    let err = format(&config(root, 1, ""), false).unwrap_err();
    assert!(
        matches!(err, FormatError::Shrink { existing: 3, .. }),
        "{err}"
    );
    assert_eq!(snapshot(root), before);
}

#[test]
fn growing_keeps_partitions_and_the_previous_xml() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    format(&config(root, 2, ""), false).unwrap();
    let resource0 = root.join("inst/slappart0/.slapos-resource");
    let before = std::fs::metadata(&resource0).unwrap().ino();
    let out = format(&config(root, 3, ""), false).unwrap();
    assert!(out.changed);
    assert_eq!(out.partitions[2].reference, "slappart2");
    assert!(root.join("inst/slappart2/.slapos-resource").exists());
    assert_eq!(std::fs::metadata(&resource0).unwrap().ino(), before);
    let backups: Vec<_> = std::fs::read_dir(root.join("etc"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("slapos.xml."))
        .collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    let backup = std::fs::read(root.join("etc").join(&backups[0])).unwrap();
    let old = slapos_proto::marshal::decode(&backup, &slapos_proto::Limits::DEFAULT).unwrap();
    assert_eq!(
        old.dict_get("partition_list")
            .and_then(Value::as_list)
            .map(<[Value]>::len),
        Some(2)
    );
}

#[test]
fn a_pretty_printed_xml_of_the_same_computer_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let cfg = config(root, 2, "");
    format(&cfg, false).unwrap();
    let path = root.join("etc/slapos.xml");
    // As lxml's pretty_print lays it out: empty leaves self-closed, one element a line.
    let pretty = std::fs::read_to_string(&path)
        .unwrap()
        .replace("<string></string>", "<string/>")
        .replace("><", ">\n  <");
    std::fs::write(&path, &pretty).unwrap();
    let out = format(&cfg, false).unwrap();
    assert!(!out.changed);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), pretty);
}

#[test]
fn a_definition_file_gives_names_users_and_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let def = root.join("def.cfg");
    std::fs::write(
        &def,
        "[computer]\naddress = 127.0.0.1/255.255.255.255\n\n[partition_0]\n\
         address = 127.0.0.1/255.255.255.255 ::1/ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff\n\
         pathname = slappart0\nuser = nobody\nnetwork_interface =\n\n[partition_1]\n\
         address = 10.1.2.3/255.255.255.255 ::1/ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff\n\
         pathname = node-b\nuser = nobody\nnetwork_interface =\n",
    )
    .unwrap();
    let extra = format!(
        "input_definition_file = {}\n{}",
        def.display(),
        with_json(root)
    );
    let cfg = config(root, 2, &extra);
    let out = format(&cfg, false).unwrap();
    assert_eq!(out.partitions[1].reference, "node-b");
    assert_eq!(out.partitions[1].ipv4, "10.1.2.3");
    assert!(root.join("inst/node-b").is_dir());
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("inst/node-b/.slapos-resource")).unwrap())
            .unwrap();
    assert_eq!(json["user"]["name"], "nobody");
    assert_eq!(
        json["path"],
        root.join("inst/node-b").to_string_lossy().as_ref()
    );
    assert_eq!(out.computer.dict_get("interface"), Some(&Value::None));
    assert!(!format(&cfg, false).unwrap().changed);
    // A definition with fewer partitions than configured is an error naming the file.
    let err = format(&config(root, 3, &extra), false).unwrap_err();
    assert!(err.to_string().contains("def.cfg"), "{err}");
}

#[test]
fn an_output_definition_file_is_written_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let out_def = root.join("out.cfg");
    let cfg = config(
        root,
        2,
        &format!("output_definition_file = {}\n", out_def.display()),
    );
    format(&cfg, false).unwrap();
    let text = std::fs::read_to_string(&out_def).unwrap();
    let parsed = definition::parse(&text, 2).unwrap();
    assert_eq!(parsed.partitions[1].pathname, "slappart1");
    assert_eq!(parsed.partitions[0].address_list.len(), 2);
}

#[test]
fn unsafe_partition_names_and_paths_are_refused() {
    assert!(check_reference("slappart0").is_ok());
    assert!(check_reference("../etc").is_err());
    assert!(check_reference("a/b").is_err());
    assert!(check_reference("").is_err());
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("inst")).unwrap();
    std::fs::write(root.join("inst/slappart0"), "not a dir").unwrap();
    let err = format(&config(root, 1, ""), false).unwrap_err();
    assert!(matches!(err, FormatError::Refused { .. }), "{err}");
}

#[test]
fn os_type_is_a_json_list_of_four_strings() {
    let text = os_type();
    let list: Vec<String> = serde_json::from_str(&text).unwrap();
    assert_eq!(list.len(), 4);
    assert!(text.contains("\", \""), "{text}");
}

#[test]
fn network_mode_needs_its_interfaces() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 1, "");
    let network = Mode {
        users: true,
        network: true,
    };
    let err = check_config(&cfg, network, false).unwrap_err();
    assert!(err.to_string().contains("interface_name"), "{err}");
    let cfg = config(dir.path(), 5, "interface_name = eth0\nipv4_local_network = 10.0.0.0/16\nipv6_prefixshift = 4\ncreate_tap = true\n");
    let err = check_config(&cfg, network, false).unwrap_err();
    assert!(err.to_string().contains("ipv6_prefixshift"), "{err}");
    let cfg = config(dir.path(), 4, "interface_name = eth0\nipv4_local_network = 10.0.0.0/16\nipv6_prefixshift = 4\ncreate_tap = true\n");
    assert!(check_config(&cfg, network, false).is_ok());
    let cfg = config(
        dir.path(),
        4,
        "interface_name = eth0\nipv4_local_network = 10.0.0.0\n",
    );
    assert!(check_config(&cfg, network, false).is_err());
}

/// The privileged path on a real interface, run by hand as root:
/// `ip tuntap add dev fmtmain0 mode tap && ip link set fmtmain0 up &&
/// ip -6 addr add 2001:db8:aaaa:bbbb::1/64 dev fmtmain0 nodad`, then
/// `SLAPGRID_FORMAT_TEST_IFACE=fmtmain0 cargo test -p slapgrid --lib format -- --ignored`.
/// Creates users fmtsoft and fmtuser0..1, taps fmttap0..1, addresses in 10.213.0.0/16 and
/// in the interface's prefix, and removes them all again with `unformat`.
#[test]
#[ignore = "root only: creates users, taps and addresses on $SLAPGRID_FORMAT_TEST_IFACE"]
fn privileged_format_is_idempotent_and_unformat_undoes_it() {
    let Ok(iface) = std::env::var("SLAPGRID_FORMAT_TEST_IFACE") else {
        eprintln!("SLAPGRID_FORMAT_TEST_IFACE is not set: skipped");
        return;
    };
    if !process::is_root() {
        eprintln!("not root: skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let text = format!(
        "[slapos]\ncomputer_id = COMP-ROOT\nmaster_url = http://127.0.0.1:28080\n\
         software_root = {root}/soft\ninstance_root = {root}/inst\n\n\
         [slapformat]\npartition_amount = 2\ninterface_name = {iface}\n\
         ipv4_local_network = 10.213.0.0/16\nuser_base_name = fmtuser\ntap_base_name = fmttap\n\
         software_user = fmtsoft\ncomputer_xml = {root}/slapos.xml\ncomputer_json = {root}/slapos.json\n",
        root = root.display()
    );
    let cfg = NodeConfig::parse(&root.join("slapos.cfg"), &text).unwrap();
    let first = format(&cfg, false).unwrap();
    assert!(first.changed);
    let p0 = &first.partitions[0];
    assert_eq!(p0.user, "fmtuser0");
    assert_eq!(p0.ipv4, "10.213.0.2");
    assert_eq!(p0.ipv6, "2001:db8:aaaa:bbbb::2");
    assert_eq!(p0.tap.as_deref(), Some("fmttap0"));
    let meta = std::fs::metadata(&p0.path).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), mode_of(&p0.path)),
        (p0.uid, p0.gid, 0o750)
    );
    assert_ne!(p0.uid, 0);
    let soft = users::passwd("fmtsoft").unwrap();
    assert!(users::group("fmtsoft")
        .unwrap()
        .members
        .contains(&"fmtuser0".to_string()));
    assert_eq!(
        std::fs::metadata(root.join("soft")).unwrap().uid(),
        soft.uid
    );
    let resource: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p0.path.join(".slapos-resource")).unwrap()).unwrap();
    assert_eq!(
        resource["ipv6_range"]["network"],
        "2001:db8:aaaa:bbbb:4001::/80"
    );
    assert_eq!(
        resource["tap"]["ipv6_addr"],
        "2001:db8:aaaa:bbbb:8001:ffff:ffff:ffff"
    );
    assert_eq!(
        resource["tap"]["ipv6_network"],
        "2001:db8:aaaa:bbbb:8001::1/80"
    );
    let addrs = Host::new(false)
        .query("ip", &["-o", "addr", "show"])
        .unwrap();
    assert!(
        addrs.contains("10.213.0.3/32") && addrs.contains("2001:db8:aaaa:bbbb::3/64"),
        "{addrs}"
    );

    let before = snapshot(root);
    let second = format(&cfg, false).unwrap();
    assert!(!second.changed);
    assert_eq!(second.partitions, first.partitions);
    assert_eq!(snapshot(root), before);

    let failures = unformat(&cfg).unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    assert!(users::passwd("fmtuser0").is_none() && users::passwd("fmtsoft").is_none());
    assert!(users::group("fmtuser1").is_none() && users::group("fmtsoft").is_none());
    assert!(!network::device_exists("fmttap0"));
    let addrs = Host::new(false)
        .query("ip", &["-o", "addr", "show"])
        .unwrap();
    assert!(
        !addrs.contains("10.213.0.") && !addrs.contains("2001:db8:aaaa:bbbb::2/"),
        "{addrs}"
    );
    assert!(p0.path.join(".slapos-resource").exists());
}

/// A user of a partition's name whose home is elsewhere is never taken over.
#[test]
#[ignore = "root only: creates and deletes user fmtuser0"]
fn an_existing_user_with_another_home_is_refused() {
    if !process::is_root() {
        eprintln!("not root: skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut host = Host::new(false);
    host.change("useradd", &["-r", "-d", "/nonexistent-fmt", "fmtuser0"])
        .unwrap();
    let text = format!(
        "[slapos]\ncomputer_id = C\nmaster_url = http://127.0.0.1:1\nsoftware_root = {root}/soft\n\
         instance_root = {root}/inst\n\n[slapformat]\npartition_amount = 1\nalter_network = false\n\
         user_base_name = fmtuser\nsoftware_user = fmtsoft\n",
        root = root.display()
    );
    let cfg = NodeConfig::parse(&root.join("slapos.cfg"), &text).unwrap();
    let err = format(&cfg, false).unwrap_err();
    let _ = host.change("userdel", &["fmtuser0"]);
    let failures = unformat(&cfg).unwrap();
    assert!(matches!(err, FormatError::UserConflict { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent-fmt"), "{err}");
    assert!(failures.is_empty(), "{failures:?}");
    assert!(users::passwd("fmtsoft").is_none());
}

#[test]
fn external_storage_gets_a_directory_per_partition() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let storage = root.join("storage");
    for d in ["data0", "data12", "dataX", "data"] {
        std::fs::create_dir_all(storage.join(d)).unwrap();
    }
    let mut cfg = config(root, 2, "");
    cfg.instance_storage_home = Some(storage.clone());
    let out = format(&cfg, false).unwrap();
    for data in ["data0", "data12"] {
        for p in ["slappart0", "slappart1"] {
            assert_eq!(mode_of(&storage.join(data).join(p)), 0o750);
        }
    }
    assert!(!storage.join("dataX/slappart0").exists());
    assert!(!storage.join("data/slappart0").exists());
    assert_eq!(
        out.computer.dict_get("instance_storage_home"),
        Some(&Value::Str(storage.to_string_lossy().into_owned()))
    );
    assert!(!format(&cfg, false).unwrap().changed);
}

/// `unformat --purge` over what a partition's (deleted) user could have planted: links
/// out of its directory, a partition directory that is itself a link. What they point at
/// stays, and so does anything of the roots that is not a partition or a release.
#[test]
fn purge_follows_no_link_and_keeps_what_is_not_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let cfg = config(root, 2, &with_json(root));
    format(&cfg, false).unwrap();
    let outside = root.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("precious"), b"keep").unwrap();
    let p0 = root.join("inst/slappart0");
    std::os::unix::fs::symlink(&outside, p0.join("escape")).unwrap();
    std::os::unix::fs::symlink(outside.join("precious"), p0.join("file-link")).unwrap();
    let p1 = root.join("inst/slappart1");
    std::fs::remove_dir_all(&p1).unwrap();
    std::os::unix::fs::symlink(&outside, &p1).unwrap();
    let release = root.join("soft/0123456789abcdef0123456789abcdef");
    std::fs::create_dir_all(release.join("bin")).unwrap();
    let stranger = root.join("soft/not-a-release");
    std::fs::create_dir_all(&stranger).unwrap();

    let failures = purge(&cfg).unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    assert!(!p0.exists() && std::fs::symlink_metadata(&p1).is_err());
    assert!(!release.exists() && !root.join("etc/slapos.json").exists());
    assert_eq!(std::fs::read(outside.join("precious")).unwrap(), b"keep");
    assert!(stranger.exists(), "purge took what is not a release");
}
