//! `flightrec snapshot`: asks a running agent for bundles and waits until they are durable.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::CliError;
use crate::bundle::Manifest;
use crate::units::Secs;

pub struct SnapshotArgs {
    pub server: String,
    pub target: Option<String>,
    pub reason: Option<String>,
    pub token: Option<String>,
    pub wait: bool,
    pub timeout: Duration,
}

/// Asks the agent for a snapshot and, unless told not to, waits until every
/// bundle it started is durable. Prints one line per bundle.
pub async fn snapshot(args: SnapshotArgs) -> Result<Vec<PathBuf>, CliError> {
    let base = args.server.trim_end_matches('/').to_string();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| CliError::Unreachable {
            url: base.clone(),
            why: e.to_string(),
        })?;
    let mut body = json!({});
    if let Some(t) = &args.target {
        body["target"] = json!(t);
    }
    if let Some(r) = &args.reason {
        body["reason"] = json!(r);
    }
    let mut req = client.post(format!("{base}/v1/snapshots")).json(&body);
    if let Some(t) = &args.token {
        req = req.bearer_auth(t);
    }
    let answer = call(req, &base).await?;
    let ids: Vec<String> = answer["ids"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default();
    if !args.wait {
        for id in &ids {
            println!("{id}");
        }
        return Ok(Vec::new());
    }
    let started = Instant::now();
    let mut paths = Vec::new();
    for id in ids {
        loop {
            let v = call(client.get(format!("{base}/v1/snapshots/{id}")), &base).await?;
            match v["phase"].as_str() {
                // Durable; its bundle.trace follows within seconds, and the
                // bundle does not change after that.
                Some("complete") if v["derived_ready_at"].is_string() || started.elapsed() > args.timeout => {
                    let path = PathBuf::from(v["path"].as_str().unwrap_or_default());
                    println!("snapshot {id} written: {}", path.display());
                    let manifest: Option<Manifest> = serde_json::from_value(v["manifest"].clone()).ok();
                    if let Some(w) = manifest.as_ref().and_then(Manifest::trigger_window) {
                        println!("  open with: go tool trace {}", path.join(&w.file).display());
                    }
                    let derived = manifest.as_ref().and_then(|m| m.derived.as_ref());
                    match derived.and_then(|d| d.stitch.pieces.first()) {
                        Some(p) => println!(
                            "  every window in one trace: go tool trace {}",
                            path.join(&p.file).display()
                        ),
                        None if derived.is_none() => println!("  bundle.trace: not made yet"),
                        None => {}
                    }
                    if let Some(f) = derived
                        .into_iter()
                        .flat_map(|d| &d.files)
                        .find(|f| f.file == crate::bundle::report::REPORT_HTML)
                    {
                        println!("  the whole bundle on one page: {}", path.join(&f.file).display());
                    }
                    paths.push(path);
                    break;
                }
                Some("failed") => {
                    return Err(CliError::Failed {
                        id,
                        why: v["error"].as_str().unwrap_or("unknown").to_string(),
                    })
                }
                _ => {}
            }
            if started.elapsed() > args.timeout {
                return Err(CliError::TimedOut {
                    id,
                    waited: Secs(args.timeout).to_string(),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(paths)
}

async fn call(req: reqwest::RequestBuilder, base: &str) -> Result<Value, CliError> {
    let resp = req.send().await.map_err(|e| CliError::Unreachable {
        url: base.to_string(),
        why: e.to_string(),
    })?;
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        return Err(CliError::Refused {
            status: status.as_u16(),
            message: v["error"].as_str().unwrap_or("no reason given").to_string(),
        });
    }
    Ok(v)
}
