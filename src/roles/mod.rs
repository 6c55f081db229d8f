//! One module per role of the binary.

pub mod api;
pub mod demo;
pub mod ingest;
pub mod migrate;
pub mod operator;
pub mod postback;
pub mod traffic;
pub mod up;
