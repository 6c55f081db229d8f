//! One module per role of the binary.

pub mod ingest;
pub mod migrate;
