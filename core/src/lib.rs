//! What every TraffoFlex role shares: the configuration store, the event bus, analytics, event schemas,
//! telemetry and settings.

pub mod settings;
pub mod store;
pub mod testenv;
