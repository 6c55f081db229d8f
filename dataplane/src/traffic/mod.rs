//! The traffic service: the public click entry points, their configuration snapshot and visitor facts.

pub mod config;
pub mod geo;
pub mod server;
pub mod stats;
pub mod unique;
pub mod visitor;
