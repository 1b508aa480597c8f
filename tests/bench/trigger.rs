//! 5. Trigger to bundle: how soon a bundle is durable after a trigger, on a busy target.

use super::*;

pub(crate) fn rfc3339(v: &Value) -> Option<SystemTime> {
    v.as_str().and_then(|s| humantime::parse_rfc3339(s).ok())
}

pub(crate) fn since(a: SystemTime, b: SystemTime) -> f64 {
    b.duration_since(a).map_or(f64::NAN, |d| d.as_secs_f64())
}

pub(crate) fn trigger(r: &mut Report, tmp: &Path) {
    // 1 s windows of ~5 MB: a 10 MiB ring holds two of them.
    let load = &FIVE_MB;
    let rings: &[u64] = if r.quick { &[10, 40] } else { &[10, 200] };
    r.section(
        "trigger",
        "Trigger to bundle",
        &format!(
            "A fixture at {} of trace, 1 s windows, compression `none` (so the ring's bytes \
             are the bundle's), `post_trigger` 2 s, an S3 sink (s3s-fs on loopback). For each \
             ring size the ring is filled, then snapshots are taken one after another. \
             *write* is from the end of recording (the last window needed arrived) to the \
             bundle durable (every file and directory fsynced, renamed): \
             `flightrec_snapshot_write_seconds`. *fired → durable* is from the trigger to the \
             manifest written, post-trigger recording included; *durable → S3* until the \
             sink holds it (the manifest is uploaded last).",
            load.name
        ),
    );
    let fx = GoService::start("fixture", load.args);
    let s3 = S3Server::start(&tmp.join("s3"), 0, "bench");
    let env = [
        ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY),
        ("AWS_REGION", "us-east-1"),
    ];
    let shots = r.scale(3, 1) as usize;
    let mut rows = Vec::new();
    for &mib in rings {
        let agent = start_agent_env(
            &format!(
                "post_trigger = \"2s\"\nmax_bytes = \"16GiB\"\n[ring]\nmax_bytes = \"{}MiB\"\n{}\n[[sinks]]\nkind = \"s3\"\nbucket = \"bench\"\nprefix = \"bench\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\nallow_http = true\n",
                mib + 8,
                target_entry(
                    "trig",
                    &fx.url,
                    &format!("window = \"1s\"\nmax_age = \"600s\"\nmax_bytes = \"{mib}MiB\"\ncompression = \"none\"")
                ),
                s3.endpoint
            ),
            &env,
        );
        // Full: the ring has begun to evict to stay within its bytes.
        wait_for(
            &format!("a full {mib} MiB ring"),
            Duration::from_secs(300),
            || {
                let evicted = agent.metric(
                    "flightrec_ring_evictions_total",
                    &[("target", "trig"), ("reason", "max_bytes")],
                );
                (evicted.unwrap_or(0.0) > 0.0).then_some(())
            },
        );
        let mut writes = Vec::new();
        let mut totals = Vec::new();
        let mut uploads = Vec::new();
        let mut sizes = Vec::new();
        for _ in 0..shots {
            let w0 = agent
                .metric("flightrec_snapshot_write_seconds_sum", &[])
                .unwrap_or(0.0);
            let (status, v) = agent.post(
                "/v1/snapshots",
                "{\"target\":\"trig\",\"reason\":\"bench\"}",
                None,
            );
            assert_eq!(status, 202, "{v}");
            let id = v["id"].as_str().expect("id").to_string();
            let dir = agent.wait_snapshot(&id, Duration::from_secs(300));
            writes.push(
                agent
                    .metric("flightrec_snapshot_write_seconds_sum", &[])
                    .unwrap_or(0.0)
                    - w0,
            );
            let m: Value =
                serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("manifest"))
                    .expect("json");
            sizes.push(m["windows"].as_array().map_or(0, |w| {
                w.iter().map(|w| w["bytes"].as_u64().unwrap_or(0)).sum::<u64>()
            }));
            let durable = rfc3339(&m["created_at"]).expect("created_at");
            totals.push(since(
                rfc3339(&m["trigger"]["fired_at"]).expect("fired_at"),
                durable,
            ));
            let delivered = wait_for("delivery to S3", Duration::from_secs(300), || {
                let (_, v) = agent.get(&format!("/v1/snapshots/{id}"));
                let d = &v["delivery"]["s3"];
                (d["state"] == "delivered")
                    .then(|| rfc3339(&d["delivered_at"]))
                    .flatten()
            });
            uploads.push(since(durable, delivered));
        }
        let bytes = median(&sizes.iter().map(|b| *b as f64).collect::<Vec<_>>());
        r.put(
            "trigger",
            &format!("{mib}MiB"),
            json!({"ring_mib": mib, "bundle_mb": bytes / 1e6, "write_seconds": writes, "fired_to_durable_seconds": totals,
                   "durable_to_s3_seconds": uploads}),
        );
        rows.push(vec![
            format!("{mib} MiB"),
            f(bytes / 1e6, 0),
            format!(
                "{} ({}–{})",
                f(median(&writes) * 1e3, 1),
                f(pct(&sorted(writes.clone()), 0.0) * 1e3, 1),
                f(pct(&sorted(writes.clone()), 1.0) * 1e3, 1)
            ),
            f(median(&totals), 2),
            f(median(&uploads), 2),
        ]);
    }
    r.table(
        &[
            "ring",
            "bundle MB",
            "write ms (median, range)",
            "fired → durable s",
            "durable → S3 s",
        ],
        &rows,
    );
}
