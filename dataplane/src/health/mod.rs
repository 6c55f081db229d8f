//! Destination health checks.
//!
//! - [`state`]: the pure state machine: unhealthy after `unhealthy_after` failures in a row, healthy again
//!   after `healthy_after` successes in a row.
//! - [`probe`]: one HTTP check with a timeout, no redirects followed, and targets on private, loopback,
//!   link-local or otherwise reserved addresses refused (after DNS resolution, and the check connects to the
//!   address that was vetted) unless allowed in settings.
//! - [`checker`]: the loop every traffic process runs, and the view of health the routing engine reads.
//!
//! **One checker per destination across pods.** Every traffic process runs the loop, but before checking a
//! destination in interval slot `floor(now / interval)` it inserts the document
//! `healthLease:{destinationId}:{slot}` into the store's `meta` collection. IDs are unique on every backend
//! (FerretDB included, whose read-modify-writes are not atomic but whose unique indexes hold), so exactly one
//! process wins each slot and checks; the others skip. A process that dies simply stops winning: the next
//! slot goes to another one. The winner deletes its previous lease, so leases don't pile up.
//!
//! The outcome goes to the store (`destinationHealth`, one document per destination: the state above plus
//! the last check) and to the bus as a `destinationHealth` event. Every traffic process reads the store's
//! health documents every few seconds into the set of unhealthy destinations the routing engine skips.

pub mod checker;
pub mod probe;
pub mod state;
