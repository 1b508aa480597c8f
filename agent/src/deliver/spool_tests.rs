//! The spool's tests: the ledger across restarts, quotas, bundles held back until finished.

use super::*;

#[test]
fn ids_that_could_escape_are_refused() {
    assert!(valid_id("20261129T034602.123Z-checkout-3f9a"));
    for bad in [
        "", ".", "..", "../etc", "a/b", ".partial", "a\\b", "%2e%2e", "a b",
    ] {
        assert!(!valid_id(bad), "{bad:?}");
    }
}

fn manifest(id: &str) -> Manifest {
    serde_json::from_value(serde_json::json!({
        "id": id, "agent_version": "0", "created_at": "2026-11-29T04:10:44.171546Z",
        "target": {"name": "t"},
        "trigger": {"kind": "manual", "reason": "", "fired_at": "2026-11-29T04:10:39Z"},
        "windows": []
    }))
    .expect("manifest")
}

/// Writes a fake committed bundle of `bytes` bytes through the real commit path.
fn put(spool: &Spool, id: &str, bytes: usize) {
    let m = manifest(id);
    let tmp = spool.partial_dir(id);
    fs::create_dir_all(&tmp).expect("mkdir");
    fs::write(tmp.join("manifest.json"), serde_json::to_vec(&m).expect("json")).expect("write");
    fs::write(tmp.join("0001-x.trace"), vec![0u8; bytes]).expect("write");
    spool.admit(id, bytes as u64).expect("admitted");
    spool.commit(id, &m).expect("commit");
}

fn open(dir: &Path, sinks: &[&str], quota: Quota) -> Spool {
    let sinks: Vec<String> = sinks.iter().map(|s| s.to_string()).collect();
    Spool::open(dir, &sinks, quota, Metrics::new()).expect("open")
}

fn delivered() -> Delivered {
    Delivered {
        location: "somewhere".into(),
        bytes: 1,
    }
}

#[test]
fn the_ledger_survives_a_restart_and_missing_entries_mean_pending() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let quota = Quota {
        max_bytes: 1 << 30,
        max_bundles: 100,
    };
    let spool = open(tmp.path(), &["a", "b"], quota);
    put(&spool, "20260101T000000.000Z-t-0001", 10);
    put(&spool, "20260101T000001.000Z-t-0002", 10);
    let first = spool.next_for("a").expect("a has work");
    assert_eq!(first.id, "20260101T000000.000Z-t-0001", "oldest first");
    spool.finish(&first.id, "a", Ok(&delivered()));
    let err = SinkError::Remote("down".into());
    let b = spool.next_for("b").expect("b has work");
    spool.finish(&b.id, "b", Err(&err));
    drop(spool);

    // Restart with sink "b" removed and "c" added.
    let spool = open(tmp.path(), &["a", "c"], quota);
    assert_eq!(spool.pending_count("a"), 1);
    assert_eq!(spool.pending_count("c"), 2, "no entry = pending for a new sink");
    let d = spool.deliveries(&first.id).expect("known");
    assert_eq!(d["a"].state, DeliveryState::Delivered);
    assert!(!d.contains_key("b"), "removed sinks are not shown");
    // The bundle no sink has seen and without derived files is finished
    // before it goes (the one a sink saw goes as it is).
    let left: Vec<String> = spool.unfinished().into_iter().map(|(id, _)| id).collect();
    assert_eq!(left, ["20260101T000001.000Z-t-0002"]);
    assert!(spool.next_for("a").is_none(), "not before it is finished");
    spool.finished("20260101T000001.000Z-t-0002");
    let again = spool.next_for("a").expect("the other bundle");
    assert_eq!(again.id, "20260101T000001.000Z-t-0002");
}

#[test]
fn quotas_evict_delivered_bundles_first_and_refuse_rather_than_drop_undelivered_ones() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let quota = Quota {
        max_bytes: 1 << 30,
        max_bundles: 2,
    };
    let spool = open(tmp.path(), &["a"], quota);
    put(&spool, "20260101T000000.000Z-t-0001", 10);
    let b = spool.next_for("a").expect("work");
    spool.finish(&b.id, "a", Ok(&delivered()));
    put(&spool, "20260101T000001.000Z-t-0002", 10);
    put(&spool, "20260101T000002.000Z-t-0003", 10);
    let ids: Vec<String> = spool.list().into_iter().map(|(_, m)| m.id).collect();
    assert_eq!(
        ids,
        ["20260101T000001.000Z-t-0002", "20260101T000002.000Z-t-0003"],
        "the delivered bundle made room"
    );
    let refused = spool.admit("20260101T000003.000Z-t-0004", 10).unwrap_err();
    assert_eq!(refused.key, "max_bundles");
    assert!(
        refused.to_string().contains("still waits for delivery"),
        "{refused}"
    );
    assert_eq!(spool.list().len(), 2, "nothing undelivered was dropped");
    assert!(!tmp
        .path()
        .join(LEDGER)
        .join("20260101T000000.000Z-t-0001.json")
        .exists());
}

#[test]
fn without_sinks_the_quota_rotates_the_oldest_bundles_out() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let spool = open(
        tmp.path(),
        &[],
        Quota {
            max_bytes: 600,
            max_bundles: 100,
        },
    );
    for i in 0..4 {
        put(&spool, &format!("20260101T00000{i}.000Z-t-000{i}"), 10);
    }
    assert!(spool.list().len() <= 2);
    assert_eq!(
        spool.list().last().map(|(_, m)| m.id.clone()).as_deref(),
        Some("20260101T000003.000Z-t-0003")
    );
}

#[test]
fn a_report_page_left_half_written_beside_a_bundle_is_removed_at_open() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let quota = Quota {
        max_bytes: 1 << 30,
        max_bundles: 100,
    };
    let spool = open(tmp.path(), &[], quota);
    put(&spool, "20260101T000000.000Z-t-0001", 10);
    let m = manifest("20260101T000000.000Z-t-0001");
    let dir = spool.bundle_dir(&m.id).expect("committed");
    crate::bundle::report::write(&dir, &m).expect("report");
    drop(spool);
    let leftover = tmp.path().join(".20260101T000000.000Z-t-0002.report.html.tmp");
    fs::write(&leftover, b"<html>half").expect("write");
    let spool = open(tmp.path(), &[], quota);
    assert!(!leftover.exists(), "the leftover is gone");
    assert!(
        dir.join(crate::bundle::report::REPORT_HTML).is_file(),
        "a whole report stays"
    );
    assert_eq!(spool.list().len(), 1);
}
