//! Compiles the `.proto` files with protox, so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["flightrec/v1/manifest.proto", "flightrec/v1/collector.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["."])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
