//! systemd `Type=notify` support: READY, STATUS, WATCHDOG and STOPPING over `NOTIFY_SOCKET`.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::config::Systemd;

pub struct Notifier {
    socket: UnixDatagram,
    target: Target,
    watchdog: Option<Duration>,
}

enum Target {
    Path(std::path::PathBuf),
    Abstract(Vec<u8>),
}

impl Notifier {
    pub fn new(sd: &Systemd) -> io::Result<Self> {
        let target = match sd.notify_socket.strip_prefix('@') {
            Some(name) => Target::Abstract(name.as_bytes().to_vec()),
            None => Target::Path(sd.notify_socket.clone().into()),
        };
        Ok(Notifier {
            socket: UnixDatagram::unbound()?,
            target,
            watchdog: sd.watchdog,
        })
    }

    fn send(&self, msg: &str) {
        let sent = match &self.target {
            Target::Path(p) => self.socket.send_to(msg.as_bytes(), p),
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name)
                    .and_then(|addr| self.socket.send_to_addr(msg.as_bytes(), &addr))
            }
        };
        match sent {
            Ok(_) => debug!(message = msg, "sd_notify"),
            Err(e) => warn!(error = %e, "cannot notify systemd"),
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=shutting down: finishing snapshots in flight");
    }

    /// Pings the watchdog at half its period until `stop`. The pings come from
    /// the async runtime, so a wedged runtime stops them and systemd restarts
    /// the agent.
    pub async fn watchdog(self: std::sync::Arc<Self>, stop: CancellationToken) {
        let Some(period) = self.watchdog else { return };
        let mut tick = tokio::time::interval(period / 2);
        loop {
            tokio::select! {
                _ = tick.tick() => self.send("WATCHDOG=1"),
                _ = stop.cancelled() => return,
            }
        }
    }
}
