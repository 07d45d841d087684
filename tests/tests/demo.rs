//! `slapos demo` as a user runs it: a real process, its output read back.

use slapos_e2e::slapos_bin;
use std::process::Command;

#[test]
fn demo_allocates_a_tree_and_shows_what_the_node_is_told() {
    let out = Command::new(slapos_bin())
        .args(["demo", "--partitions", "3", "--xml"])
        .output()
        .expect("run slapos demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every SLAP call succeeded.
    for endpoint in [
        "loadComputerConfigurationFromXML",
        "supplySupply",
        "requestComputerPartition",
        "setComputerPartitionConnectionXml",
        "getFullComputerInformation",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.contains(endpoint) && l.contains("-> 200")),
            "{endpoint} not answered 200 in:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("slappart0  demo-root    started  SOFTINST-1"),
        "{stdout}"
    );
    assert!(
        stdout.contains("slappart1  demo-worker  started  SOFTINST-2"),
        "{stdout}"
    );
    assert!(stdout.contains("slappart2  (free)"), "{stdout}");
    // The marshalled document the node receives decodes, and carries the published URL.
    let xml = stdout
        .lines()
        .find(|l| l.starts_with("<marshal>"))
        .expect("--xml prints the document");
    let computer = slapos_proto::slap::Computer::decode(xml.as_bytes(), &Default::default())
        .expect("the document decodes as a Computer");
    assert_eq!(computer.computer_id, "COMP-DEMO");
    assert!(xml.contains("http://[fd00::10]:8080/"));
}

#[test]
fn demo_refuses_too_few_partitions_with_a_clear_error() {
    let out = Command::new(slapos_bin())
        .args(["demo", "--partitions", "1"])
        .output()
        .expect("run slapos demo");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--partitions must be at least 2"),
        "{stderr}"
    );
}
