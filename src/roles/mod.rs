//! One module per role of the binary.

pub mod demo;
pub mod ingest;
pub mod migrate;
pub mod postback;
pub mod traffic;
pub mod up;
