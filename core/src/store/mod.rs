//! The configuration store: one trait, a MongoDB implementation and an embedded SQLite implementation.
