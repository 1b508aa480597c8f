//! A real Kubernetes control plane for tests: etcd and kube-apiserver (built
//! by tests/k8s/build.sh) on free loopback ports, RBAC on, driven with the
//! kubectl built beside them.
//!
//! There is no kubelet, scheduler or controller-manager. The test plays them:
//! it creates each namespace's `default` ServiceAccount, puts pods on nodes
//! through `spec.nodeName`, writes their status through the `status`
//! subresource, and finishes their deletion. Pod IPs are loopback addresses
//! (127.0.0.21, ...) where real Go services listen.

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

use super::{repo_root, Proc};

/// How long etcd or kube-apiserver may take to become ready: the pair took
/// 4-5 s here with other builds on the 2 cores (tests/k8s/README.md).
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// Attempts at starting a process on free ports: another process may take a
/// port between our probe and the server's bind.
const PORT_ATTEMPTS: usize = 5;

/// The directory holding `etcd`, `kube-apiserver` and `kubectl`. Runs
/// tests/k8s/build.sh once per test binary: it returns at once when the
/// binaries for the pinned versions are cached, and otherwise builds them
/// (about 10 minutes once per machine; its progress goes to stderr).
pub fn k8s_bins() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = Command::new("bash")
            .arg(repo_root().join("tests/k8s/build.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run tests/k8s/build.sh (needs bash and go)");
        assert!(
            out.status.success(),
            "tests/k8s/build.sh failed; see its messages above"
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let dir = PathBuf::from(stdout.lines().last().expect("build.sh prints its directory"));
        for bin in ["etcd", "kube-apiserver", "kubectl"] {
            assert!(
                dir.join(bin).is_file(),
                "{} missing after build.sh",
                dir.join(bin).display()
            );
        }
        dir
    })
}

/// A port that was free on 127.0.0.1 a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// `bytes` random bytes in hex, for tokens.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("read /dev/urandom");
    hex::encode(buf)
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Why a server did not come up.
enum StartError {
    /// Its port was taken after we picked it: try other ports.
    PortTaken,
    Failed(String),
}

/// Polls `ready` until it holds, the process exits, or the deadline passes.
fn wait_ready(proc: &mut Proc, log: &Path, mut ready: impl FnMut() -> bool) -> Result<(), StartError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(status)) = proc.child.try_wait() {
            let text = tail(log, 30);
            return Err(if text.contains("address already in use") {
                StartError::PortTaken
            } else {
                StartError::Failed(format!("{} exited ({status}):\n{text}", proc.name))
            });
        }
        if ready() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(StartError::Failed(format!(
                "{} not ready after {READY_TIMEOUT:?}:\n{}",
                proc.name,
                tail(log, 30)
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A pod as the test creates it: one container, on a node, with labels and
/// annotations. Its status is written later, as a kubelet would.
#[derive(Debug, Clone)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub container: String,
    pub labels: Vec<(String, String)>,
    pub annotations: Vec<(String, String)>,
}

impl Pod {
    pub fn new(namespace: &str, name: &str, node: &str) -> Pod {
        Pod {
            namespace: namespace.into(),
            name: name.into(),
            node: node.into(),
            container: "app".into(),
            labels: Vec::new(),
            annotations: Vec::new(),
        }
    }

    pub fn label(mut self, key: &str, value: &str) -> Pod {
        self.labels.push((key.into(), value.into()));
        self
    }

    pub fn annotation(mut self, key: &str, value: &str) -> Pod {
        self.annotations.push((key.into(), value.into()));
        self
    }

    fn manifest(&self) -> Value {
        let map = |kv: &[(String, String)]| -> Value {
            kv.iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": map(&self.labels),
                "annotations": map(&self.annotations),
            },
            "spec": {
                // Bound at creation, as the scheduler would have done.
                "nodeName": self.node,
                "containers": [{"name": self.container, "image": "registry.example.com/app:1"}],
            },
        })
    }
}

/// How a container last ended, for `lastState.terminated`.
#[derive(Debug, Clone)]
pub struct Terminated {
    pub reason: String,
    pub exit_code: i32,
    pub started_at: SystemTime,
    pub finished_at: SystemTime,
}

/// etcd and kube-apiserver as processes, killed when this drops.
pub struct ControlPlane {
    /// `https://127.0.0.1:<port>`.
    pub server: String,
    /// kube-apiserver's self-signed serving certificate and its CA: what
    /// clients trust (a pod's `ca.crt`).
    pub ca_file: PathBuf,
    /// A kubeconfig for the static admin token (group system:masters).
    pub admin_kubeconfig: PathBuf,
    /// How long the last start (or restart) took until `/readyz` answered.
    pub started_in: Duration,
    port: u16,
    etcd_url: String,
    admin_token: String,
    restarts: u32,
    // Dropped in this order: the API server before its store, both before
    // their directory is removed.
    apiserver: Proc,
    etcd: Proc,
    dir: tempfile::TempDir,
}

impl ControlPlane {
    /// Starts etcd, then kube-apiserver on it, and waits until the API
    /// server is ready (its bootstrap RBAC roles are in place).
    pub fn start() -> ControlPlane {
        let bins = k8s_bins();
        let dir = tempfile::Builder::new()
            .prefix("flightrec-k8s-")
            .tempdir()
            .expect("tempdir");
        let started = Instant::now();
        let (etcd, etcd_url) = start_etcd(bins, dir.path());

        let admin_token = random_hex(24);
        std::fs::write(
            dir.path().join("tokens.csv"),
            format!("{admin_token},admin,admin,system:masters\n"),
        )
        .expect("write tokens.csv");
        make_service_account_key(dir.path());

        let ca_file = dir.path().join("pki/apiserver.crt");
        let mut port = 0;
        let mut apiserver = None;
        for _ in 0..PORT_ATTEMPTS {
            port = free_port();
            let log = dir.path().join("kube-apiserver.log");
            match start_apiserver(bins, dir.path(), &log, port, &etcd_url, &ca_file, &admin_token) {
                Ok(p) => {
                    apiserver = Some(p);
                    break;
                }
                Err(StartError::PortTaken) => continue,
                Err(StartError::Failed(why)) => panic!("kube-apiserver did not start: {why}"),
            }
        }
        let apiserver =
            apiserver.unwrap_or_else(|| panic!("kube-apiserver: no free port in {PORT_ATTEMPTS} attempts"));
        let server = format!("https://127.0.0.1:{port}");
        let cp = ControlPlane {
            admin_kubeconfig: dir.path().join("admin.kubeconfig"),
            server,
            ca_file,
            started_in: started.elapsed(),
            port,
            etcd_url,
            admin_token,
            restarts: 0,
            apiserver,
            etcd,
            dir,
        };
        cp.write_kubeconfig(&cp.admin_kubeconfig, "admin", &cp.admin_token);
        cp
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops kube-apiserver (SIGTERM, as in a rolling upgrade) and starts it
    /// again on the same port, with the same certificate and keys; etcd and
    /// its data stay, so objects and issued tokens survive.
    pub fn restart_apiserver(&mut self) {
        self.apiserver.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.apiserver.child.try_wait().expect("try_wait").is_none() {
            if Instant::now() > deadline {
                let name = match self.restarts {
                    0 => "kube-apiserver.log".to_string(),
                    n => format!("kube-apiserver.restart-{n}.log"),
                };
                let log = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
                let tail: Vec<&str> = log
                    .lines()
                    .rev()
                    .take(40)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                panic!(
                    "kube-apiserver did not exit within 60s of SIGTERM; its log ends:\n{}",
                    tail.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.restarts += 1;
        // Each run has its log, so the one before the restart stays readable.
        let log = self
            .dir
            .path()
            .join(format!("kube-apiserver.restart-{}.log", self.restarts));
        let started = Instant::now();
        self.apiserver = match start_apiserver(
            k8s_bins(),
            self.dir.path(),
            &log,
            self.port,
            &self.etcd_url,
            &self.ca_file,
            &self.admin_token,
        ) {
            Ok(p) => p,
            Err(StartError::PortTaken) => panic!(
                "kube-apiserver cannot restart: port {} was taken while it was down",
                self.port
            ),
            Err(StartError::Failed(why)) => panic!("kube-apiserver did not restart: {why}"),
        };
        self.started_in = started.elapsed();
    }

    /// Writes a kubeconfig for a bearer token against this API server.
    pub fn write_kubeconfig(&self, path: &Path, user: &str, token: &str) {
        // JSON is YAML: kubectl reads it as a kubeconfig.
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": {
                "server": self.server,
                "certificate-authority": self.ca_file,
            }}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": user}}],
            "current-context": "test",
        });
        std::fs::write(path, serde_json::to_vec_pretty(&config).expect("JSON")).expect("write kubeconfig");
    }

    /// A kubeconfig for a ServiceAccount's token, in the control plane's dir.
    pub fn kubeconfig_for(&self, namespace: &str, sa: &str, token: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{namespace}.{sa}.kubeconfig"));
        self.write_kubeconfig(&path, &format!("system:serviceaccount:{namespace}:{sa}"), token);
        path
    }

    /// kubectl as `kubeconfig`, `input` on its stdin; stdout, or why it failed.
    pub fn kubectl_as(
        &self,
        kubeconfig: &Path,
        args: &[&str],
        input: Option<&str>,
    ) -> Result<String, String> {
        let mut child = Command::new(k8s_bins().join("kubectl"))
            .arg("--kubeconfig")
            .arg(kubeconfig)
            // Discovery cache per control plane, not in the user's ~/.kube.
            .arg("--cache-dir")
            .arg(self.dir.path().join("kubectl-cache"))
            .args(args)
            .env_remove("KUBECONFIG")
            // No user preferences (aliases, defaults) from ~/.kube/kuberc.
            .env("KUBERC", "off")
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kubectl");
        if let Some(text) = input {
            child
                .stdin
                .take()
                .expect("piped stdin")
                .write_all(text.as_bytes())
                .expect("write kubectl stdin");
        }
        let out = child.wait_with_output().expect("wait for kubectl");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "kubectl {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// kubectl as the admin; panics with kubectl's message on failure.
    pub fn kubectl(&self, args: &[&str]) -> String {
        self.kubectl_as(&self.admin_kubeconfig, args, None)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// kubectl as the admin with `input` on stdin (`apply -f -`).
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> String {
        self.kubectl_as(&self.admin_kubeconfig, args, Some(input))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `kubectl get -o json` of one object or list.
    pub fn get_json(&self, args: &[&str]) -> Value {
        let mut full = vec!["get", "-o", "json"];
        full.extend_from_slice(args);
        let out = self.kubectl(&full);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("kubectl {} printed no JSON: {e}", args.join(" ")))
    }

    /// A namespace with its `default` ServiceAccount, which the
    /// controller-manager would create and pod admission requires.
    pub fn create_namespace(&self, namespace: &str) {
        self.kubectl(&["create", "namespace", namespace]);
        self.create_service_account(namespace, "default");
    }

    pub fn create_service_account(&self, namespace: &str, name: &str) {
        self.kubectl(&["-n", namespace, "create", "serviceaccount", name]);
    }

    /// A token for the ServiceAccount through the TokenRequest API, signed
    /// with the control plane's service-account key: what a pod has mounted.
    pub fn token(&self, namespace: &str, sa: &str) -> String {
        self.kubectl(&["-n", namespace, "create", "token", sa, "--duration=1h"])
            .trim()
            .to_string()
    }

    pub fn create_pod(&self, pod: &Pod) {
        self.kubectl_stdin(&["create", "-f", "-"], &pod.manifest().to_string());
    }

    /// Replaces the pod's status through the `status` subresource, as the
    /// kubelet does.
    pub fn set_pod_status(&self, namespace: &str, name: &str, status: Value) {
        let patch = json!({ "status": status }).to_string();
        self.kubectl(&[
            "-n",
            namespace,
            "patch",
            "pod",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch,
        ]);
    }

    /// Marks the pod Running on `ip`, its container ready and never restarted.
    pub fn pod_running(&self, pod: &Pod, ip: &str) {
        let now = now_rfc3339();
        self.set_pod_status(
            &pod.namespace,
            &pod.name,
            json!({
                "phase": "Running",
                "hostIP": "127.0.0.1",
                "hostIPs": [{"ip": "127.0.0.1"}],
                "podIP": ip,
                "podIPs": [{"ip": ip}],
                "startTime": now,
                "conditions": [
                    {"type": "Ready", "status": "True", "lastTransitionTime": now},
                    {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                ],
                "containerStatuses": [container_status(pod, 0, json!({}))],
            }),
        );
    }

    /// The pod's container was restarted (its `restartCount`-th time) after
    /// it ended as `last` says, e.g. OOMKilled with exit code 137; the pod
    /// keeps its IP and start time, as on a node.
    pub fn pod_restarted(&self, pod: &Pod, restart_count: u32, last: &Terminated) {
        let terminated = json!({"terminated": {
            "reason": last.reason,
            "exitCode": last.exit_code,
            "startedAt": humantime::format_rfc3339_seconds(last.started_at).to_string(),
            "finishedAt": humantime::format_rfc3339_seconds(last.finished_at).to_string(),
        }});
        // A merge patch replaces the list whole: the one container's status.
        self.set_pod_status(
            &pod.namespace,
            &pod.name,
            json!({"containerStatuses": [container_status(pod, restart_count, terminated)]}),
        );
    }

    /// Starts a graceful deletion, as `kubectl delete` does: a pod bound to a
    /// node stays, Terminating (`deletionTimestamp` set), until its kubelet
    /// removes it (`remove_pod`).
    pub fn delete_pod(&self, namespace: &str, name: &str) {
        self.kubectl(&["-n", namespace, "delete", "pod", name, "--wait=false"]);
    }

    /// Removes the pod at once, as its kubelet does once the containers are
    /// gone.
    pub fn remove_pod(&self, namespace: &str, name: &str) {
        self.kubectl(&[
            "-n",
            namespace,
            "delete",
            "pod",
            name,
            "--grace-period=0",
            "--force",
            "--wait=false",
        ]);
    }
}

/// The status of the pod's one container, running since now.
fn container_status(pod: &Pod, restart_count: u32, last_state: Value) -> Value {
    json!({
        "name": pod.container,
        "image": "registry.example.com/app:1",
        "imageID": "",
        "ready": true,
        "started": true,
        "restartCount": restart_count,
        "state": {"running": {"startedAt": now_rfc3339()}},
        "lastState": last_state,
    })
}

fn start_etcd(bins: &Path, dir: &Path) -> (Proc, String) {
    for _ in 0..PORT_ATTEMPTS {
        let (client, peer) = (free_port(), free_port());
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = dir.join("etcd.log");
        // etcd binds its ports before it writes the data dir, so an attempt
        // that lost a port leaves nothing there for the next one.
        let data = dir.join("etcd");
        let child = Command::new(bins.join("etcd"))
            .args(["--name", "test", "--log-level", "warn"])
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("test={peer_url}")])
            // Durability across power loss is not what these tests are
            // about; fsync on a disk shared with builds only makes them slow.
            .arg("--unsafe-no-fsync")
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("etcd log"))
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bins.join("etcd").display()));
        let mut proc = Proc {
            child,
            name: "etcd".into(),
        };
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("client");
        let health = format!("{client_url}/health");
        let ready = || {
            http.get(&health)
                .send()
                .and_then(|r| r.json::<Value>())
                .is_ok_and(|v| v["health"] == "true")
        };
        match wait_ready(&mut proc, &log, ready) {
            Ok(()) => return (proc, client_url),
            Err(StartError::PortTaken) => continue,
            Err(StartError::Failed(why)) => panic!("etcd did not start: {why}"),
        }
    }
    panic!("etcd: no free ports in {PORT_ATTEMPTS} attempts")
}

/// The RSA key that signs and verifies ServiceAccount tokens.
fn make_service_account_key(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl (tests/setup.sh installs it)");
        assert!(
            out.status.success(),
            "openssl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["genrsa", "-out", "sa.key", "2048"]);
    run(&["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"]);
}

fn start_apiserver(
    bins: &Path,
    dir: &Path,
    log: &Path,
    port: u16,
    etcd_url: &str,
    ca_file: &Path,
    admin_token: &str,
) -> Result<Proc, StartError> {
    let log_file = File::create(log).expect("kube-apiserver log");
    let child = Command::new(bins.join("kube-apiserver"))
        .arg(format!("--etcd-servers={etcd_url}"))
        .args(["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"])
        .arg(format!("--secure-port={port}"))
        // Writes a self-signed certificate for 127.0.0.1 on first start and
        // reuses it on a restart, so clients keep trusting it.
        .arg(format!("--cert-dir={}", dir.join("pki").display()))
        .arg(format!("--token-auth-file={}", dir.join("tokens.csv").display()))
        .arg("--authorization-mode=RBAC")
        .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
        .arg(format!(
            "--service-account-key-file={}",
            dir.join("sa.pub").display()
        ))
        .arg(format!(
            "--service-account-signing-key-file={}",
            dir.join("sa.key").display()
        ))
        .arg("--service-cluster-ip-range=10.96.0.0/16")
        .arg("--profiling=false")
        // Without it, a SIGTERM waits the full 60 s HTTP shutdown timeout for
        // clients that hold watches open (every flightrec agent does), and
        // only then ends them; with it, watches are ended first, as a rolling
        // upgrade of a real control plane configures.
        .arg("--shutdown-watch-termination-grace-period=5s")
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", bins.join("kube-apiserver").display()));
    let mut proc = Proc {
        child,
        name: "kube-apiserver".into(),
    };
    let readyz = format!("https://127.0.0.1:{port}/readyz");
    // The certificate appears once the server has started to come up; the
    // client is rebuilt each poll until it has it whole.
    let ready = || {
        let Ok(pem) = std::fs::read(ca_file) else {
            return false;
        };
        let Ok(certs) = reqwest::Certificate::from_pem_bundle(&pem) else {
            return false;
        };
        let client = certs
            .into_iter()
            .fold(reqwest::blocking::Client::builder(), |b, c| {
                b.add_root_certificate(c)
            })
            .timeout(Duration::from_secs(5))
            .build();
        client.is_ok_and(|c| {
            c.get(&readyz)
                .bearer_auth(admin_token)
                .send()
                .is_ok_and(|r| r.status().is_success())
        })
    };
    wait_ready(&mut proc, log, ready).map(|()| proc)
}
