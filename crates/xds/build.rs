//! Compiles Bowline's own `.proto` files with protox (no `protoc` needed) and generates
//! the Rust types with prost, and the gRPC service code with tonic.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/istio/workload/workload.proto",
        "proto/istio/security/authorization.proto",
        "proto/istio/workload/zds/zds.proto",
        "proto/istio/v1/auth/ca.proto",
        "proto/bowline/agent/v1/status.proto",
        "proto/bowline/l7/v1/authorization.proto",
        "proto/bowline/l7/v1/route.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    let mut config = prost_build::Config::new();
    config
        .bytes(["."])
        // `prost::Name` with Google's type URL prefix, for `Any` packing.
        .enable_type_names()
        .type_name_domain(["."], "type.googleapis.com")
        // JSON for debug dumps: addresses as text, extensions left out.
        .type_attribute(".istio.workload", "#[derive(serde::Serialize)]")
        .type_attribute(".istio.security", "#[derive(serde::Serialize)]")
        .type_attribute(".bowline.l7", "#[derive(serde::Serialize)]")
        .field_attribute(
            ".istio.workload.Workload.addresses",
            "#[serde(serialize_with = \"crate::json::ips\")]",
        )
        .field_attribute(
            ".istio.workload.NetworkAddress.address",
            "#[serde(serialize_with = \"crate::json::ip\")]",
        )
        .field_attribute(
            ".istio.security.Address.address",
            "#[serde(serialize_with = \"crate::json::ip\")]",
        )
        .field_attribute(
            ".bowline.l7.v1.DirectResponse.body",
            "#[serde(serialize_with = \"crate::json::lossy\")]",
        )
        .field_attribute(".istio.workload.Extension.config", "#[serde(skip)]");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds_with_config(descriptors, config)?;
    Ok(())
}
