//! Kubernetes, at the edge of the agent: what the API server says becomes targets.
//!
//! Takes in: the pods of this node, from the API server. Hands on: targets,
//! published on a watch channel that [`crate::app`] merges with the
//! configured ones. No stage that records, snapshots or delivers imports
//! this module.

pub mod discovery;
