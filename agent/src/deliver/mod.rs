//! Deliver: the durable spool of bundles and the loops that hand them to the sinks.
//!
//! Takes in: a bundle directory written aside by [`crate::snapshot`], which
//! [`spool::Spool::commit`] renames into place and records in its ledger: from
//! then on the bundle is acknowledged and never lost. Hands on: each bundle
//! to every configured sink ([`sink`]: one file per backend behind one trait),
//! retried with backoff behind a circuit breaker ([`delivery`]), its state
//! per sink kept in the ledger so a restart resumes where it stopped. Owns:
//! the spool directory, its quotas and what may be evicted from it.

pub mod delivery;
pub mod events;
mod ledger;
pub mod sink;
pub mod spool;
