//! FluxGate's protobuf contracts, package `fluxgate.v1`.
//!
//! Rust clients (other internal services, the CLI, the end-to-end tests) depend on this crate
//! alone: it holds the generated messages, the tonic clients and servers, and the encoded file
//! descriptor set that the server offers through gRPC reflection.

pub mod codec;

/// Package `fluxgate.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("fluxgate.v1");
}

/// The encoded `FileDescriptorSet` of every FluxGate proto file and its imports.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("fluxgate_descriptor");

/// Every method of an encoded descriptor set, with its gRPC path (`/package.Service/Method`).
pub fn methods(encoded: &[u8]) -> Vec<(String, prost_types::MethodDescriptorProto)> {
    use prost::Message as _;
    let set = prost_types::FileDescriptorSet::decode(encoded).unwrap_or_default();
    let mut out = Vec::new();
    for file in &set.file {
        for service in &file.service {
            for m in &service.method {
                let path = format!("/{}.{}/{}", file.package(), service.name(), m.name());
                out.push((path, m.clone()));
            }
        }
    }
    out
}
