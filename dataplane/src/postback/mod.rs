//! The postback service: affiliate networks report conversions to `GET|POST /postback/{networkKey}`; each is
//! authenticated, normalised through the network's template, attributed from the signed click ID, recorded
//! exactly once per (network, transaction ID) in the store, and emitted as a conversion event (with a
//! postback-log event for every request) through a durable event log shipped like the click log.
//!
//! * [`config`] — networks, templates and the routing snapshot, swapped atomically on reload.
//! * [`request`] — parameters from the query and a JSON or form body; the redacted request for the log.
//! * [`auth`] — IP allowlist, token, HMAC signature.
//! * [`normalize`] — template and alias parameter mapping, payout, currency, status (pure).
//! * [`currency`] — payouts converted to the report currency from a configured rate table (pure).
//! * [`record`] — the exactly-once store write: unique-index insert, then duplicate or CAS status update.
//! * [`process`] — the steps of one postback; [`server`] — the axum routes, responses, events and metrics.
//! * [`reconcile`] — after an unclean stop, conversion events appended again for what changed meanwhile.
//! * [`outbound`] — outbound postbacks to traffic sources: a persisted queue, leases, retries.

pub mod auth;
pub mod config;
pub mod currency;
pub mod normalize;
pub mod outbound;
pub mod process;
pub mod reconcile;
pub mod record;
pub mod request;
pub mod server;
