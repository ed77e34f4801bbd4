//! The Xinqiao gRPC API, package `xinqiao.v1`.

#![allow(clippy::all, missing_docs)]

pub mod codec;

pub mod v1 {
    tonic::include_proto!("xinqiao.v1");
    include!(concat!(env!("OUT_DIR"), "/xinqiao.v1.text_fields.rs"));

    mod search_response;
    pub use search_response::SearchEntriesResponse;
}

/// The encoded file descriptor set of every xinqiao.v1 file and its imports, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/xinqiao_descriptor.bin"));

/// The sample 身份核验 upstream's gRPC messages (`proto/xinqiao/sample/v1`): what a provider's
/// own system might serve, for the demo, the benchmark and the tests of gRPC interfaces.
pub mod sample {
    include!(concat!(env!("OUT_DIR"), "/xinqiao.sample.v1.rs"));

    /// Its FileDescriptorSet, as a provider registers it with the interface.
    pub const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/xinqiao_sample_descriptor.bin"));
}
