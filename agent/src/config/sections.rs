//! The agent's own sections: `[server]`, `[tls]`, `[snapshots]`, `[ring]` and `[log]`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::table::Table;
use super::{Problem, Secret, DEFAULT_LISTEN};

#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    pub listen: SocketAddr,
    /// File holding the bearer token required by mutating endpoints.
    pub token_file: Option<PathBuf>,
    /// The token itself (`server.token` or `FLIGHTREC_SERVER__TOKEN`); never logged.
    pub token: Option<Secret>,
    /// Largest request body accepted.
    pub max_body: u64,
    /// When true, `/readyz` fails while any target has not given a window
    /// recently. Off by default: a recorder must never take its service out
    /// of rotation.
    pub ready_requires_targets: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tls {
    /// PEM file of extra CA certificates trusted for outbound HTTPS (targets,
    /// probes, sinks), on top of the system's roots.
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Snapshots {
    pub dir: PathBuf,
    /// Keep recording this long after a trigger before writing the bundle.
    pub post_trigger: Duration,
    /// Spool quota in bytes of committed bundles.
    pub max_bytes: u64,
    /// Spool quota in committed bundles.
    pub max_bundles: usize,
}

/// Default spool quota: room for a few dozen busy-service bundles without
/// filling a node's disk.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 4 << 30;
pub const DEFAULT_SPOOL_MAX_BUNDLES: u64 = 100;

#[derive(Debug, Clone, PartialEq)]
pub struct Ring {
    /// Byte budget shared by the rings of all targets.
    pub max_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human lines on a terminal, JSON otherwise.
    Auto,
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Log {
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `flightrec=debug`.
    pub level: String,
}

pub(super) fn read_server(root: &mut Table<'_>, problems: &mut Vec<Problem>) -> Server {
    let mut server_t = root.table("server", problems);
    let listen_text = server_t
        .string("listen", problems)
        .unwrap_or_else(|| DEFAULT_LISTEN.into());
    let listen = match listen_text.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => {
            problems.push(server_t.problem(
                "listen",
                format!("{listen_text:?} is not an address like \"127.0.0.1:7070\""),
            ));
            DEFAULT_LISTEN.parse().expect("default listen address parses")
        }
    };
    let server = Server {
        listen,
        token_file: server_t.string("token_file", problems).map(PathBuf::from),
        token: server_t.string("token", problems).map(Secret::new),
        max_body: server_t.size("max_body", 1 << 20, problems),
        ready_requires_targets: server_t.bool("ready_requires_targets", false, problems),
    };
    server_t.finish(problems);
    server
}

pub(super) fn read_tls(root: &mut Table<'_>, problems: &mut Vec<Problem>) -> Tls {
    let mut tls_t = root.table("tls", problems);
    let tls = Tls {
        ca_file: tls_t.string("ca_file", problems).map(PathBuf::from),
    };
    if let Some(f) = &tls.ca_file {
        if !f.is_file() {
            problems.push(tls_t.problem("ca_file", format!("{} is not a readable file", f.display())));
        }
    }
    tls_t.finish(problems);
    tls
}

pub(super) fn read_snapshots(root: &mut Table<'_>, problems: &mut Vec<Problem>) -> Snapshots {
    let mut snap_t = root.table("snapshots", problems);
    let snapshots = Snapshots {
        dir: PathBuf::from(
            snap_t
                .string("dir", problems)
                .unwrap_or_else(|| "./flightrec-data".into()),
        ),
        post_trigger: snap_t.duration("post_trigger", Duration::from_secs(2), problems),
        max_bytes: snap_t.size("max_bytes", DEFAULT_SPOOL_MAX_BYTES, problems),
        max_bundles: snap_t.uint("max_bundles", DEFAULT_SPOOL_MAX_BUNDLES, problems) as usize,
    };
    if snapshots.max_bytes < 1 << 20 {
        problems.push(snap_t.problem("max_bytes", "must be at least 1MiB".into()));
    }
    if snapshots.max_bundles == 0 {
        problems.push(snap_t.problem("max_bundles", "must be at least 1".into()));
    }
    snap_t.finish(problems);
    snapshots
}

pub(super) fn read_ring(root: &mut Table<'_>, problems: &mut Vec<Problem>) -> Ring {
    let mut ring_t = root.table("ring", problems);
    let ring = Ring {
        max_bytes: ring_t.size("max_bytes", 512 << 20, problems),
    };
    ring_t.finish(problems);
    ring
}

pub(super) fn read_log(root: &mut Table<'_>, problems: &mut Vec<Problem>) -> Log {
    let mut log_t = root.table("log", problems);
    let format = match log_t.string("format", problems).as_deref() {
        None | Some("auto") => LogFormat::Auto,
        Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            problems.push(log_t.problem(
                "format",
                format!("{other:?} is not one of \"auto\", \"text\", \"json\""),
            ));
            LogFormat::Auto
        }
    };
    let log = Log {
        format,
        level: log_t.string("level", problems).unwrap_or_else(|| "info".into()),
    };
    log_t.finish(problems);
    log
}
