//! Why a stream could not be decoded (whole).

use crate::header::GoVersion;
use crate::FormatError;

/// Why decoding stopped. Every event before the error was yielded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes do not start with a trace header.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// Go 1.21 and older write the v1 format, which this crate does not
    /// decode.
    #[error("not supported: v1 trace (Go 1.21 or older): the header says go {version}")]
    V1 { version: GoVersion },
    /// A header Go's parser does not accept either (Go 1.24 wrote `go 1.23`;
    /// a newer Go may have changed the format).
    #[error("not supported: trace version go {0} (Go's parser reads 1.22, 1.23, 1.25 and 1.26)")]
    UnsupportedVersion(GoVersion),
    /// The bytes break the format or the scheduler's rules at `offset`.
    #[error("corrupt trace at byte {offset}: {what}")]
    Corrupt { offset: usize, what: String },
    /// The stream ended inside a generation, or the transport says it was
    /// cut. The events of the generations in the first `whole_len` bytes
    /// were yielded.
    #[error("trace cut at byte {received}: the events of its whole generations (up to byte {whole_len}) were yielded, the rest is lost")]
    Cut { whole_len: usize, received: usize },
    /// `feed` or `finish` after `finish`.
    #[error("the decoder has finished and takes no more bytes")]
    Finished,
}

impl DecodeError {
    /// Stream offset the error refers to, when it has one.
    pub fn offset(&self) -> Option<usize> {
        match self {
            DecodeError::Corrupt { offset, .. } => Some(*offset),
            DecodeError::Cut { received, .. } => Some(*received),
            DecodeError::Format(FormatError::Corrupt { offset, .. }) => Some(*offset),
            _ => None,
        }
    }
}
