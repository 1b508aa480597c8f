//! The 16-byte header that starts every trace, and how to name bytes that are not one.

use std::fmt;

use crate::FormatError;

pub const HEADER_LEN: usize = 16;

/// Go version from a trace header, e.g. 1.23.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct GoVersion(pub u16);

impl GoVersion {
    /// Traces from Go 1.22 on use the v2 batch framing walked here.
    pub fn is_v2(self) -> bool {
        self.0 >= 22
    }
    /// Go 1.26 ends every generation with an in-band marker byte.
    pub(crate) fn marks_generation_end(self) -> bool {
        self.0 >= 26
    }
}

impl fmt::Display for GoVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "1.{}", self.0)
    }
}

/// Checks the 16-byte header. Needs at least [`HEADER_LEN`] bytes to say yes;
/// can say no as soon as the bytes seen cannot start a header.
pub fn check_header(data: &[u8]) -> Result<GoVersion, FormatError> {
    const PREFIX: &[u8] = b"go 1.";
    let seen = data.len().min(HEADER_LEN);
    let head = &data[..seen];
    let not_a_trace = || FormatError::NotATrace(sniff(data));
    if head.is_empty() {
        return Err(FormatError::Empty);
    }
    if !PREFIX.starts_with(&head[..seen.min(PREFIX.len())]) {
        return Err(not_a_trace());
    }
    if seen < HEADER_LEN {
        // Could still become a header; the caller decides whether more comes.
        return Err(FormatError::ShortHeader(seen));
    }
    let rest = &head[PREFIX.len()..];
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let tail = &rest[digits..];
    let minor = std::str::from_utf8(&rest[..digits])
        .ok()
        .and_then(|s| s.parse::<u16>().ok());
    match minor {
        Some(m) if digits <= 2 && tail.starts_with(b" trace") && tail[6..].iter().all(|b| *b == 0) => {
            Ok(GoVersion(m))
        }
        _ => Err(not_a_trace()),
    }
}

/// A short, printable description of what a body starts with, for errors.
pub fn sniff(data: &[u8]) -> String {
    let head = &data[..data.len().min(48)];
    let printable = head
        .iter()
        .all(|b| b.is_ascii_graphic() || *b == b' ' || *b == b'\n' || *b == b'\r' || *b == b'\t');
    let more = if data.len() > head.len() { "…" } else { "" };
    if printable {
        let text: String = String::from_utf8_lossy(head)
            .chars()
            .map(|c| if c.is_whitespace() { ' ' } else { c })
            .collect();
        format!("{:?}{more}", text)
    } else {
        format!("bytes {}{more}", hex::encode(head))
    }
}
