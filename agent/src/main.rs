//! The `flightrec` command line.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use flightrec::config::{self, LogFormat, ProcessEnv};
use flightrec::{app, cli};

#[derive(Parser)]
#[command(
    name = "flightrec",
    version,
    about = "A flight recorder for Go services: keeps the last minute of execution traces and snapshots them when something goes wrong"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Record the configured targets and serve the API until SIGTERM/SIGINT.
    Run {
        /// TOML config file; without one, records http://127.0.0.1:6060 into ./flightrec-data.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Log format (overrides log.format).
        #[arg(long, value_enum)]
        log_format: Option<LogFormatArg>,
    },
    /// Check a config file and print every problem with its key path.
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Ask a running agent for a snapshot and wait until the bundle is on disk;
    /// with --selector, ask every node's agent on Kubernetes, through a FlightSnapshot.
    Snapshot {
        /// Target to snapshot; all targets when omitted.
        #[arg(long, conflicts_with = "selector")]
        target: Option<String>,
        /// Kubernetes: capture every pod this label selector matches
        /// (`app=checkout`, as kubectl -l), on every node.
        #[arg(long)]
        selector: Option<String>,
        /// Kubernetes: the pods' namespace (all when omitted); the
        /// FlightSnapshot is created there, else in the kubeconfig's namespace.
        #[arg(long, requires = "selector")]
        namespace: Option<String>,
        /// Kubernetes: the kubeconfig to use (default: $KUBECONFIG,
        /// ~/.kube/config, or the pod's service account).
        #[arg(long, requires = "selector")]
        kubeconfig: Option<PathBuf>,
        /// Kubernetes: keep recording this long after the capture starts, e.g. "5s".
        #[arg(long, requires = "selector")]
        post_trigger: Option<String>,
        /// Why; recorded in the manifest.
        #[arg(long)]
        reason: Option<String>,
        /// Agent API base URL; defaults to server.listen of --config (or http://127.0.0.1:7070).
        #[arg(long)]
        server: Option<String>,
        /// Config of the agent, for its address and API token.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// File holding the API bearer token (overrides the config's).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Print the ids and return at once instead of waiting for the bundles.
        #[arg(long)]
        no_wait: bool,
        /// How long to wait for the bundles, e.g. "2m".
        #[arg(long, default_value = "2m", value_parser = parse_duration_arg)]
        timeout: Duration,
    },
    /// Print a bundle's manifest in human terms and verify every window's sha256.
    Inspect {
        /// Bundle directory, or a .tar / .tar.gz / .tar.zst archive of one.
        path: PathBuf,
        /// Print JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Write a bundle's report.html: the whole bundle on one time axis, its
    /// worst moments and how to open each, in one self-contained page.
    Report {
        /// Bundle directory, or a .tar / .tar.gz / .tar.zst archive of one.
        path: PathBuf,
        /// Where to write the page (default: report.html in the bundle
        /// directory, or ./<id>-report.html for an archive).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Make a bundle's derived files (bundle.trace: its windows stitched into
    /// one trace) when it has none, as the agent does once a bundle is
    /// durable; prints what was made. Not for a bundle a running agent is
    /// delivering.
    Stitch {
        /// Bundle directory.
        dir: PathBuf,
        /// Make them again even if the manifest lists them.
        #[arg(long)]
        again: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Auto,
    Text,
    Json,
}

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    flightrec::units::parse_duration(s)
}

/// glibc's malloc raises its mmap threshold after large frees and spreads
/// threads over many arenas; with 1 MiB blocks compressed on a thread pool
/// that let RSS creep up by megabytes a minute. A fixed threshold and two
/// arenas keep it flat (measured: 64 MiB ring at 5 MB/s, RSS steady at
/// ~77 MB instead of growing past 125 MB).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    // SAFETY: mallopt only changes allocator parameters; called before any
    // thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config, log_format } => run(config, log_format),
        Command::CheckConfig { config } => check_config(&config),
        Command::Snapshot {
            selector: Some(selector),
            namespace,
            kubeconfig,
            post_trigger,
            reason,
            no_wait,
            timeout,
            ..
        } => report(fleet_snapshot(cli::FleetArgs {
            selector,
            namespace,
            kubeconfig,
            reason,
            post_trigger,
            wait: !no_wait,
            timeout,
        })),
        Command::Snapshot {
            target,
            reason,
            server,
            config,
            token_file,
            no_wait,
            timeout,
            ..
        } => report(snapshot(
            target, reason, server, config, token_file, !no_wait, timeout,
        )),
        Command::Stitch { dir, again } => match flightrec::bundle::finish::finish_again(&dir, again) {
            Ok(f) => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&f.manifest.derived).unwrap_or_default()
                );
                match f.manifest.derived.and_then(|d| d.stitch.error) {
                    Some(_) => ExitCode::FAILURE,
                    None => ExitCode::SUCCESS,
                }
            }
            Err(e) => {
                eprintln!("flightrec: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Inspect { path, json } => match cli::inspect(&path, json) {
            Ok((text, ok)) => {
                print!("{text}");
                if ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("flightrec: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Report { path, output } => match cli::write_report(&path, output.as_deref()) {
            Ok(w) => {
                if !w.problems.is_empty() {
                    eprintln!(
                        "flightrec: warning: the bundle did not verify ({} problem{}, shown at the top of the page; see flightrec inspect)",
                        w.problems.len(),
                        if w.problems.len() == 1 { "" } else { "s" }
                    );
                }
                println!("{}", w.path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("flightrec: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flightrec: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(path: &std::path::Path) -> ExitCode {
    match config::load(Some(path), &ProcessEnv) {
        Ok(c) => {
            let discovery = if c.kubernetes.enabled {
                format!(" + the annotated pods of node {}", c.kubernetes.node)
            } else {
                String::new()
            };
            println!(
                "{}: ok ({} target{}{discovery}, API on {}, bundles in {})",
                path.display(),
                c.targets.len(),
                if c.targets.len() == 1 { "" } else { "s" },
                c.server.listen,
                c.snapshots.dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprint!("{e}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        // The metadata "target" (module path) would collide with the `target`
        // field every line about a target carries; the target name wins.
        builder
            .json()
            .flatten_event(true)
            .with_target(false)
            .with_current_span(true)
            .with_span_list(false)
            .init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

fn run(config_path: Option<PathBuf>, log_format: Option<LogFormatArg>) -> ExitCode {
    let config = match config::load(config_path.as_deref(), &ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            eprint!("flightrec: {e}");
            return ExitCode::from(2);
        }
    };
    let format = match log_format {
        Some(LogFormatArg::Auto) => LogFormat::Auto,
        Some(LogFormatArg::Text) => LogFormat::Text,
        Some(LogFormatArg::Json) => LogFormat::Json,
        None => config.log.format,
    };
    init_logging(format, &config.log.level);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(watch_signals(shutdown.clone(), reload_tx));
        let path = config_path.clone();
        let options = app::RunOptions {
            systemd: config::systemd(&ProcessEnv),
            reload: Some(app::Reloader {
                requests: reload_rx,
                load: Box::new(move || config::load(path.as_deref(), &ProcessEnv)),
            }),
            ..Default::default()
        };
        app::run(config, shutdown, options).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            eprintln!("flightrec: {e}");
            ExitCode::FAILURE
        }
    }
}

/// First SIGTERM/SIGINT: orderly shutdown. A second one: exit at once.
/// SIGHUP: reload the config.
async fn watch_signals(shutdown: CancellationToken, reload: tokio::sync::mpsc::Sender<()>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        error!("cannot install signal handlers; stop the agent with SIGKILL");
        return;
    };
    let mut first = true;
    loop {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = hup.recv() => {
                info!("SIGHUP: reloading the config");
                // A reload already queued covers this request too.
                let _ = reload.try_send(());
                continue;
            }
        }
        if first {
            first = false;
            shutdown.cancel();
        } else {
            warn!("second signal: exiting without finishing snapshots");
            std::process::exit(130);
        }
    }
}

fn fleet_snapshot(args: cli::FleetArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(cli::fleet_snapshot(args))?;
    Ok(())
}

fn snapshot(
    target: Option<String>,
    reason: Option<String>,
    server: Option<String>,
    config_path: Option<PathBuf>,
    token_file: Option<PathBuf>,
    wait: bool,
    timeout: Duration,
) -> anyhow::Result<()> {
    let config = config::load(config_path.as_deref(), &ProcessEnv).map_err(|e| anyhow::anyhow!("{e}"))?;
    let server = server.unwrap_or_else(|| {
        let addr = config.server.listen;
        let host = if addr.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            addr.ip().to_string()
        };
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        format!("http://{host}:{}", addr.port())
    });
    let token_path = token_file.or(config.server.token_file.clone());
    let token = match token_path {
        Some(p) => Some(
            std::fs::read_to_string(&p)
                .with_context(|| format!("cannot read token file {}", p.display()))?
                .trim()
                .to_string(),
        ),
        None => config.server.token.as_ref().map(|s| s.expose().to_string()),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(cli::snapshot(cli::SnapshotArgs {
        server,
        target,
        reason,
        token,
        wait,
        timeout,
    }))?;
    Ok(())
}
