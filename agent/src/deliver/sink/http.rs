//! The HTTP collector sink: one `multipart/form-data` POST per bundle, streamed from disk.
//!
//! The wire format is specified in `proto/flightrec/v1/collector.proto` and
//! the README. The body is built here rather than by a multipart library so
//! its exact length is known up front (collectors get a `Content-Length`)
//! and each window is hashed while it streams: a file that no longer matches
//! its manifest aborts the request instead of reaching the collector.

use crate::tls::ExtraRoots;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use flightrec_proto::v1 as pb;
use flightrec_proto::Message;
use futures_util::future::BoxFuture;
use futures_util::stream::{self, Stream};
use parking_lot::Mutex;
use reqwest::header;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use url::Url;

use super::{BundleRef, Delivered, Sink, SinkError};
use crate::bundle::MANIFEST_PB;
use crate::config::{redact_url, HttpConfig, Secret};

pub struct HttpSink {
    name: String,
    url: Url,
    token: Option<Secret>,
    client: reqwest::Client,
}

impl HttpSink {
    pub fn new(name: &str, c: &HttpConfig, roots: &ExtraRoots) -> Result<Self, String> {
        let token = match &c.token_file {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| format!("cannot read token_file {}: {e}", p.display()))?;
                let t = text.trim();
                if t.is_empty() {
                    return Err(format!("token_file {} is empty", p.display()));
                }
                Some(Secret::new(t.to_string()))
            }
            None => c.token.clone(),
        };
        let mut builder = roots
            .reqwest(reqwest::Client::builder())
            .connect_timeout(c.connect_timeout)
            .user_agent(concat!("flightrec/", env!("CARGO_PKG_VERSION")));
        if let Some(p) = &c.ca_file {
            let pem = std::fs::read(p).map_err(|e| format!("cannot read ca_file {}: {e}", p.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("ca_file {} holds no usable PEM certificate: {e}", p.display()))?;
            builder = builder.tls_certs_merge(certs);
        }
        let client = builder
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(HttpSink {
            name: name.to_string(),
            url: c.url.clone(),
            token,
            client,
        })
    }

    async fn post(&self, bundle: &BundleRef) -> Result<Delivered, SinkError> {
        let manifest =
            tokio::fs::read(bundle.dir.join(MANIFEST_PB))
                .await
                .map_err(|e| SinkError::Damaged {
                    id: bundle.id.clone(),
                    why: format!("{MANIFEST_PB}: cannot read: {e}"),
                })?;
        let boundary = format!("flightrec-{:032x}", rand::random::<u128>());
        let mut segments = VecDeque::new();
        segments.push_back(Segment::Bytes(part_head(
            &boundary,
            "manifest",
            MANIFEST_PB,
            "application/x-protobuf",
            None,
        )));
        segments.push_back(Segment::Bytes(Bytes::from(manifest)));
        let mut window_bytes = 0u64;
        for f in bundle.manifest.files() {
            if f.file.contains('/') || f.file.contains('"') || f.file.starts_with('.') {
                return Err(SinkError::Damaged {
                    id: bundle.id.clone(),
                    why: format!("{} file name {:?} cannot be sent", f.role.as_str(), f.file),
                });
            }
            segments.push_back(Segment::Bytes(part_head(
                &boundary,
                f.role.as_str(),
                f.file,
                "application/octet-stream",
                Some(f.sha256),
            )));
            segments.push_back(Segment::File {
                path: bundle.dir.join(f.file),
                name: f.file.to_string(),
                len: f.bytes,
                sha256: f.sha256.to_string(),
            });
            window_bytes += f.bytes;
        }
        segments.push_back(Segment::Bytes(Bytes::from(format!("\r\n--{boundary}--\r\n"))));
        let length: u64 = segments.iter().map(Segment::len).sum();

        let damaged = Arc::new(Mutex::new(None));
        let body = reqwest::Body::wrap_stream(body_stream(segments, damaged.clone()));
        let mut req = self
            .client
            .post(self.url.clone())
            .header(
                header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            )
            .header(header::CONTENT_LENGTH, length)
            .header("Idempotency-Key", &bundle.id)
            .header("X-Flightrec-Bundle-Id", &bundle.id)
            .body(body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t.expose());
        }
        let where_ = redact_url(&self.url);
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                if let Some(why) = damaged.lock().take() {
                    return Err(SinkError::Damaged {
                        id: bundle.id.clone(),
                        why,
                    });
                }
                return Err(SinkError::Remote(format!(
                    "sink {:?}: POST {where_} failed: {}",
                    self.name,
                    super::object::error_chain(&e)
                )));
            }
        };
        let status = resp.status();
        let is_pb = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-protobuf"));
        let body = resp.bytes().await.unwrap_or_default();
        if status.is_success() || status == reqwest::StatusCode::CONFLICT {
            let location = is_pb
                .then(|| pb::Receipt::decode(body.as_ref()).ok())
                .flatten()
                .map(|r| r.location)
                .filter(|l| !l.is_empty())
                .unwrap_or_else(|| format!("{where_} ({})", bundle.id));
            return Ok(Delivered {
                location,
                bytes: window_bytes,
            });
        }
        let text = String::from_utf8_lossy(&body[..body.len().min(300)])
            .trim()
            .to_string();
        let hint = match status.as_u16() {
            401 | 403 => "; check the sink's token_file (or token)",
            413 => "; the collector refuses bundles this large: raise its body limit",
            _ => "",
        };
        Err(SinkError::Remote(format!(
            "sink {:?}: POST {where_} answered {status}: {text:?}{hint}",
            self.name
        )))
    }
}

impl Sink for HttpSink {
    fn deliver<'a>(&'a self, bundle: &'a BundleRef) -> BoxFuture<'a, Result<Delivered, SinkError>> {
        Box::pin(self.post(bundle))
    }

    fn describe(&self) -> String {
        redact_url(&self.url)
    }
}

fn part_head(boundary: &str, name: &str, file: &str, content_type: &str, sha256: Option<&str>) -> Bytes {
    // The first boundary has no leading CRLF; later ones close the previous part.
    let mut s = String::new();
    if name != "manifest" {
        s.push_str("\r\n");
    }
    let _ = write!(
        s,
        "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{file}\"\r\nContent-Type: {content_type}\r\n"
    );
    if let Some(sha) = sha256 {
        let _ = write!(s, "X-Flightrec-Sha256: {sha}\r\n");
    }
    s.push_str("\r\n");
    Bytes::from(s)
}

enum Segment {
    Bytes(Bytes),
    File {
        path: PathBuf,
        name: String,
        len: u64,
        sha256: String,
    },
}

impl Segment {
    fn len(&self) -> u64 {
        match self {
            Segment::Bytes(b) => b.len() as u64,
            Segment::File { len, .. } => *len,
        }
    }
}

struct Reading {
    file: tokio::fs::File,
    name: String,
    left: u64,
    sha256: String,
    hasher: Sha256,
}

struct BodyState {
    segments: VecDeque<Segment>,
    reading: Option<Reading>,
    damaged: Arc<Mutex<Option<String>>>,
    done: bool,
}

/// Streams the parts, reading each window in 1 MiB chunks and checking its
/// sha256 at its end. A damaged file ends the stream with an error (the
/// request fails) and leaves the reason in `damaged`.
fn body_stream(
    segments: VecDeque<Segment>,
    damaged: Arc<Mutex<Option<String>>>,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let state = BodyState {
        segments,
        reading: None,
        damaged,
        done: false,
    };
    stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            if let Some(r) = &mut st.reading {
                if r.left == 0 {
                    let sha = hex::encode(std::mem::take(&mut r.hasher).finalize());
                    if sha != r.sha256 {
                        let why = format!("{}: sha256 on disk is {sha}, manifest says {}", r.name, r.sha256);
                        return Some(fail(st, why));
                    }
                    st.reading = None;
                    continue;
                }
                let want = r.left.min(1 << 20) as usize;
                let mut buf = BytesMut::with_capacity(want);
                match (&mut r.file).take(want as u64).read_buf(&mut buf).await {
                    Ok(0) => {
                        let why = format!("{}: file is shorter than the manifest says", r.name);
                        return Some(fail(st, why));
                    }
                    Ok(n) => {
                        r.left -= n as u64;
                        r.hasher.update(&buf);
                        return Some((Ok(buf.freeze()), st));
                    }
                    Err(e) => {
                        let why = format!("{}: read failed: {e}", r.name);
                        return Some(fail(st, why));
                    }
                }
            }
            match st.segments.pop_front()? {
                Segment::Bytes(b) => return Some((Ok(b), st)),
                Segment::File {
                    path,
                    name,
                    len,
                    sha256,
                } => match tokio::fs::File::open(&path).await {
                    Ok(file) => {
                        st.reading = Some(Reading {
                            file,
                            name,
                            left: len,
                            sha256,
                            hasher: Sha256::new(),
                        })
                    }
                    Err(e) => {
                        let why = format!("{name}: cannot open: {e}");
                        return Some(fail(st, why));
                    }
                },
            }
        }
    })
}

fn fail(mut st: BodyState, why: String) -> (Result<Bytes, std::io::Error>, BodyState) {
    *st.damaged.lock() = Some(why.clone());
    st.done = true;
    (Err(std::io::Error::other(why)), st)
}
