//! Agora's gRPC contracts. The `.proto` files under `proto/` are the source of
//! truth; this crate is what both sides of a call compile against, so that no
//! service imports another service's crate.

/// `agora.threads.v1`: the threads service (projects' problems, solutions, comments and votes).
pub mod threads {
    /// Version 1 of the threads API.
    pub mod v1 {
        #![allow(missing_docs, clippy::all, clippy::pedantic)]
        tonic::include_proto!("agora.threads.v1");
    }
}

/// The encoded descriptors of every file under `proto/`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));
