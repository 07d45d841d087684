//! Replicas on IPv6: two `slapos master run` processes listening on [::1] form a group,
//! and `slapos cluster status` reaches them there.

use slapos_e2e::slapos_bin;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_v6_port() -> u16 {
    TcpListener::bind("[::1]:0")
        .expect("IPv6 loopback")
        .local_addr()
        .expect("addr")
        .port()
}

struct Killed(Vec<Child>);
impl Drop for Killed {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn a_group_forms_over_ipv6() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut configs = Vec::new();
    for id in 1..=2u64 {
        let path = dir.path().join(format!("r{id}.toml"));
        let api = format!("[::1]:{}", free_v6_port());
        std::fs::write(
            &path,
            format!(
                "id = {id}\nraft_addr = \"[::1]:{}\"\napi_addr = \"{api}\"\ndata_dir = \"{}\"\n",
                free_v6_port(),
                dir.path().join(format!("d{id}")).display()
            ),
        )
        .expect("write config");
        configs.push((path, api));
    }
    let out = Command::new(slapos_bin())
        .args(["master", "init", "--config"])
        .arg(&configs[0].0)
        .output()
        .expect("init");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut children = Killed(Vec::new());
    for (path, _) in &configs {
        children.0.push(
            Command::new(slapos_bin())
                .args(["master", "run", "--config"])
                .arg(path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("run"),
        );
    }
    let join = Command::new(slapos_bin())
        .args(["master", "join", "--via", &configs[0].1, "--config"])
        .arg(&configs[1].0)
        .output()
        .expect("join");
    assert!(
        join.status.success(),
        "{}",
        String::from_utf8_lossy(&join.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new(slapos_bin())
            .args(["cluster", "status", "--json", "--via", &configs[1].1])
            .output()
            .expect("status");
        if let Ok(s) = serde_json::from_slice::<serde_json::Value>(&out.stdout) {
            let members = s["members"].as_array().cloned().unwrap_or_default();
            let all_v6 = members.iter().all(|m| {
                m["api_addr"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("[::1]:"))
            });
            let voters = members.iter().filter(|m| m["role"] == "voter").count();
            if s["leader"].is_u64()
                && voters == 2
                && all_v6
                && members.iter().all(|m| m["error"].is_null())
            {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no two-voter IPv6 group: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
