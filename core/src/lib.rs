//! What every TraffoFlex role shares: the configuration store, the event bus, analytics, event schemas,
//! telemetry and settings.

pub mod analytics;
pub mod bus;
pub mod clickid;
pub mod events;
pub mod settings;
pub mod store;
pub mod telemetry;
pub mod testenv;
