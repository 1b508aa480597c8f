//! Delivery test helpers: real S3 (s3s-fs) and Azure (Azurite) servers, an in-process HTTP collector, a stallable TCP proxy.
//!
//! Like the rest of the harness, every server binds 127.0.0.1, is killed by
//! PID when its handle drops, and waits poll with a deadline.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use sha2::{Digest, Sha256};

use super::{repo_root, wait_for, Proc};

pub const S3_ACCESS_KEY: &str = "flightrec-test-key";
pub const S3_SECRET_KEY: &str = "flightrec-test-secret-0123456789";
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's well-known development key (public, documented by Microsoft).
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A port nothing listens on right now (bound and released): for a server
/// that starts later, or for one that must stay down.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

pub fn sha256_file(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    hex::encode(Sha256::digest(&bytes))
}

fn cargo_bin(name: &str) -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .expect("CARGO_HOME or HOME");
    let p = home.join("bin").join(name);
    assert!(
        p.is_file(),
        "{} missing: run tests/setup.sh (cargo install s3s-fs@0.14.1 --features binary --locked)",
        p.display()
    );
    p
}

/// s3s-fs 0.14.1: a real S3 server that checks SigV4, storing objects as
/// files under `root/<bucket>/<key>`.
pub struct S3Server {
    pub proc: Proc,
    pub endpoint: String,
    pub root: PathBuf,
}

impl S3Server {
    /// Starts on `port` (0 = any) with `bucket` created.
    pub fn start(root: &Path, port: u16, bucket: &str) -> S3Server {
        std::fs::create_dir_all(root.join(bucket)).expect("create bucket dir");
        let mut child = Command::new(cargo_bin("s3s-fs"))
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
            .arg(root)
            .env("RUST_LOG", "s3s_fs=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3s-fs");
        let stdout = child.stdout.take().expect("piped stdout");
        let proc = Proc {
            child,
            name: "s3s-fs".into(),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(at) = line.find("server is running at ") {
                    let _ = tx.send(line[at + "server is running at ".len()..].trim().to_string());
                }
            }
        });
        let endpoint = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("s3s-fs did not say where it listens");
        S3Server {
            proc,
            endpoint,
            root: root.to_path_buf(),
        }
    }

    pub fn object(&self, bucket: &str, key: &str) -> PathBuf {
        self.root.join(bucket).join(key)
    }

    /// True while a multipart upload is open and at least one part is stored.
    pub fn multipart_in_progress(&self) -> bool {
        let names: Vec<String> = std::fs::read_dir(&self.root)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .collect()
            })
            .unwrap_or_default();
        names
            .iter()
            .any(|n| n.starts_with(".upload-") && n.ends_with(".json"))
            && names
                .iter()
                .any(|n| n.starts_with(".upload_id-") && n.contains(".part-"))
    }
}

/// Azurite's blob service (npm azurite@3.35.0 from tests/setup.sh).
pub struct Azurite {
    pub proc: Proc,
    /// Account URL: `http://127.0.0.1:PORT/devstoreaccount1`.
    pub endpoint: String,
}

impl Azurite {
    pub fn start(location: &Path, container: &str) -> Azurite {
        let bin = repo_root().join("target/node/node_modules/.bin/azurite-blob");
        assert!(
            bin.is_file(),
            "{} missing: run tests/setup.sh (npm install azurite@3.35.0)",
            bin.display()
        );
        let port = free_port();
        let child = Command::new(&bin)
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .arg("--location")
            .arg(location)
            .args([
                "--skipApiVersionCheck",
                "--disableTelemetry",
                "--loose",
                "--silent",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start azurite-blob");
        let proc = Proc {
            child,
            name: "azurite".into(),
        };
        wait_for("Azurite to listen", Duration::from_secs(30), || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
        let endpoint = format!("http://127.0.0.1:{port}/{AZURITE_ACCOUNT}");
        create_container(&endpoint, container);
        Azurite { proc, endpoint }
    }
}

/// Creates a container with a Shared Key signed request; node's crypto does
/// the HMAC so the test needs no extra crates.
fn create_container(endpoint: &str, container: &str) {
    const SCRIPT: &str = r#"
const [endpoint, account, key, container] = process.argv.slice(1);
const crypto = require('crypto'); const http = require('http');
const url = new URL(`${endpoint}/${container}?restype=container`);
const date = new Date().toUTCString(); const version = '2021-08-06';
const toSign = ['PUT', '', '', '', '', '', '', '', '', '', '', '',
  `x-ms-date:${date}`, `x-ms-version:${version}`,
  `/${account}${url.pathname}\nrestype:container`].join('\n');
const sig = crypto.createHmac('sha256', Buffer.from(key, 'base64')).update(toSign, 'utf8').digest('base64');
const req = http.request(url, {method: 'PUT', headers: {'x-ms-date': date, 'x-ms-version': version,
  'Content-Length': 0, Authorization: `SharedKey ${account}:${sig}`}}, res => {
  let body = ''; res.on('data', d => body += d);
  res.on('end', () => { if (res.statusCode !== 201 && res.statusCode !== 409) { console.error(res.statusCode, body); process.exit(1); } });
});
req.on('error', e => { console.error(e.message); process.exit(1); }); req.end();
"#;
    let out = Command::new("node")
        .args(["-e", SCRIPT, endpoint, AZURITE_ACCOUNT, AZURITE_KEY, container])
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "creating Azurite container failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A TCP proxy in front of a server whose client-to-server direction can be
/// stalled after a number of bytes: a deterministic "upload in progress".
pub struct Proxy {
    pub port: u16,
    forwarded: Arc<AtomicU64>,
    gate: Arc<(Mutex<Option<u64>>, Condvar)>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let forwarded = Arc::new(AtomicU64::new(0));
        let gate: Arc<(Mutex<Option<u64>>, Condvar)> = Arc::new((Mutex::new(None), Condvar::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, g, s) = (forwarded.clone(), gate.clone(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (c2, s2) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                let (f, g) = (f.clone(), g.clone());
                std::thread::spawn(move || pump(client, server, Some((f, g))));
                std::thread::spawn(move || pump(s2, c2, None));
            }
        });
        Proxy {
            port,
            forwarded,
            gate,
            stop,
        }
    }

    /// Stops forwarding client bytes once `limit` in total have passed.
    pub fn stall_after(&self, limit: u64) {
        *self.gate.0.lock() = Some(limit);
        self.gate.1.notify_all();
    }

    pub fn release(&self) {
        *self.gate.0.lock() = None;
        self.gate.1.notify_all();
    }

    pub fn stalled(&self) -> bool {
        self.gate
            .0
            .lock()
            .is_some_and(|l| self.forwarded.load(Ordering::SeqCst) >= l)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.release();
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

type Gate = (Arc<AtomicU64>, Arc<(Mutex<Option<u64>>, Condvar)>);

fn pump(mut from: TcpStream, mut to: TcpStream, gate: Option<Gate>) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let mut want = buf.len();
        if let Some((fwd, g)) = &gate {
            let mut limit = g.0.lock();
            while let Some(l) = *limit {
                let done = fwd.load(Ordering::SeqCst);
                if done < l {
                    want = want.min((l - done) as usize);
                    break;
                }
                g.1.wait(&mut limit);
            }
        }
        let n = match from.read(&mut buf[..want]) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        if let Some((fwd, _)) = &gate {
            fwd.fetch_add(n as u64, Ordering::SeqCst);
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// One bundle as the in-process collector received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub manifest: flightrec_proto::v1::Manifest,
    /// Window file name → bytes.
    pub windows: BTreeMap<String, Vec<u8>>,
    pub idempotency_key: String,
}

#[derive(Default)]
struct CollectorState {
    token: String,
    /// Answer 503 to this many requests first.
    fail: AtomicUsize,
    requests: AtomicUsize,
    bundles: Mutex<Vec<Received>>,
    errors: Mutex<Vec<String>>,
}

/// An HTTP collector (axum) inside the test process implementing the wire
/// format of proto/flightrec/v1/collector.proto; it checks every part's
/// sha256 against its header and the manifest before answering 200.
pub struct Collector {
    pub url: String,
    state: Arc<CollectorState>,
    _rt: tokio::runtime::Runtime,
}

impl Collector {
    pub fn start(token: &str, fail_first: usize) -> Collector {
        use axum::routing::post;
        let state = Arc::new(CollectorState {
            token: token.to_string(),
            fail: AtomicUsize::new(fail_first),
            ..Default::default()
        });
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind collector");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new()
            .route("/v1/bundles", post(receive))
            .layer(axum::extract::DefaultBodyLimit::disable())
            .with_state(state.clone());
        rt.spawn(async move { axum::serve(listener, app).await });
        Collector {
            url: format!("http://{addr}/v1/bundles"),
            state,
            _rt: rt,
        }
    }

    pub fn bundles(&self) -> Vec<Received> {
        self.state.bundles.lock().clone()
    }

    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    pub fn errors(&self) -> Vec<String> {
        self.state.errors.lock().clone()
    }
}

async fn receive(
    axum::extract::State(state): axum::extract::State<Arc<CollectorState>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use flightrec_proto::Message;
    state.requests.fetch_add(1, Ordering::SeqCst);
    let header = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    if header("authorization") != format!("Bearer {}", state.token) {
        return (StatusCode::UNAUTHORIZED, "bad token").into_response();
    }
    if state
        .fail
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return (StatusCode::SERVICE_UNAVAILABLE, "collector warming up").into_response();
    }
    match parse_bundle(&header("content-type"), &body) {
        Ok((manifest, windows)) => {
            let id = header("x-flightrec-bundle-id");
            let receipt = flightrec_proto::v1::Receipt {
                bundle_id: id.clone(),
                location: format!("collector://{id}"),
                bytes: windows.values().map(|w| w.len() as u64).sum(),
            };
            state.bundles.lock().push(Received {
                id,
                manifest,
                windows,
                idempotency_key: header("idempotency-key"),
            });
            (
                [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
                receipt.encode_to_vec(),
            )
                .into_response()
        }
        Err(e) => {
            state.errors.lock().push(e.clone());
            (StatusCode::BAD_REQUEST, e).into_response()
        }
    }
}

type Parsed = (flightrec_proto::v1::Manifest, BTreeMap<String, Vec<u8>>);

/// A strict reading of the documented format: manifest part first, then one
/// part per window (and window tail) with a matching X-Flightrec-Sha256.
fn parse_bundle(content_type: &str, body: &[u8]) -> Result<Parsed, String> {
    use flightrec_proto::Message;
    let boundary = content_type
        .strip_prefix("multipart/form-data; boundary=")
        .ok_or(format!("content-type {content_type:?}"))?;
    let delim = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut rest = body;
    let first = find(rest, delim.as_bytes()).ok_or("no first boundary")?;
    rest = &rest[first + delim.len()..];
    loop {
        if rest.starts_with(b"--") {
            break;
        }
        rest = rest
            .strip_prefix(b"\r\n")
            .ok_or("boundary not followed by CRLF")?;
        let head_end = find(rest, b"\r\n\r\n").ok_or("part without header end")?;
        let head = String::from_utf8_lossy(&rest[..head_end]).to_string();
        rest = &rest[head_end + 4..];
        let next = find(rest, format!("\r\n{delim}").as_bytes()).ok_or("part without end")?;
        parts.push((head, rest[..next].to_vec()));
        rest = &rest[next + 2 + delim.len()..];
    }
    let mut parts = parts.into_iter();
    let (head, manifest) = parts.next().ok_or("no parts")?;
    if !head.contains("name=\"manifest\"") || !head.contains("application/x-protobuf") {
        return Err(format!("first part is not the manifest: {head}"));
    }
    let manifest = flightrec_proto::v1::Manifest::decode(manifest.as_slice()).map_err(|e| e.to_string())?;
    let mut windows = BTreeMap::new();
    for (head, bytes) in parts {
        let file = head
            .split("filename=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .ok_or("window part without filename")?
            .to_string();
        let sha = head
            .lines()
            .find_map(|l| l.strip_prefix("X-Flightrec-Sha256: "))
            .ok_or("window part without X-Flightrec-Sha256")?;
        let got = hex::encode(Sha256::digest(&bytes));
        let listed = listed_files(&manifest)
            .into_iter()
            .find(|(f, _)| *f == file)
            .ok_or(format!("{file} not in the manifest"))?;
        if got != sha || got != listed.1 {
            return Err(format!(
                "{file}: sha256 {got}, header {sha}, manifest {}",
                listed.1
            ));
        }
        windows.insert(file, bytes);
    }
    if windows.len() != listed_files(&manifest).len() {
        return Err(format!(
            "{} files sent, manifest lists {}",
            windows.len(),
            listed_files(&manifest).len()
        ));
    }
    Ok((manifest, windows))
}

/// Every file the manifest lists (windows, their tails, the ending's log,
/// the derived bundle.trace): (file, sha256).
fn listed_files(m: &flightrec_proto::v1::Manifest) -> Vec<(String, String)> {
    let file = |f: &flightrec_proto::v1::File| (f.file.clone(), f.sha256.clone());
    m.windows
        .iter()
        .flat_map(|w| {
            std::iter::once((w.file.clone(), w.sha256.clone()))
                .chain(w.tail.as_ref().map(|t| (t.file.clone(), t.sha256.clone())))
        })
        .chain(m.ending.iter().filter_map(|e| e.log.as_ref()).map(file))
        .chain(m.derived.iter().flat_map(|d| &d.files).map(file))
        .collect()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A tmpfs of `size` mounted at `dir`, unmounted on drop; `None` (with a loud
/// message) when not root, since only root may mount.
pub struct Tmpfs {
    pub dir: PathBuf,
}

impl Tmpfs {
    pub fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).expect("mkdir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        if !out.status.success() {
            eprintln!(
                "\n!!!!!!!! SKIPPED: cannot mount a tmpfs ({}); the disk-full test needs root !!!!!!!!\n",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(Tmpfs {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}
