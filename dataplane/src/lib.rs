//! The TraffoFlex data plane: the traffic hot path, the postback service and the ingester.

pub mod analytics_sink;
pub mod clicklog;
pub mod egress;
pub mod health;
pub mod ingest;
pub mod live;
pub mod postback;
pub mod reload;
pub mod routing;
pub mod traffic;
