//! Compiles `protos/*.proto` with protox (pure Rust: no system protoc) and generates the
//! tonic/prost code.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Only with the `rpc` feature (the domain crate builds without an RPC stack).
    if std::env::var_os("CARGO_FEATURE_RPC").is_none() {
        return Ok(());
    }
    let protos = ["protos/raft.proto", "protos/master.proto"];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["protos"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
