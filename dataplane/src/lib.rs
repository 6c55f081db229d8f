//! The TraffoFlex data plane: the traffic hot path, the postback service and the ingester.

pub mod ingest;
