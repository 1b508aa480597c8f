//! Automatic triggers: latency probes, metric thresholds and alert webhooks, all through one gate.

pub mod promtext;
