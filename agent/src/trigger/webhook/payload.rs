//! The notifications Alertmanager (webhook payload version 4) and Grafana post, and how they are read.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use sha2::{Digest, Sha256};

use crate::snapshot::TriggerKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Alertmanager,
    Grafana,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Alertmanager => "alertmanager",
            Source::Grafana => "grafana",
        }
    }

    pub fn kind(self) -> TriggerKind {
        match self {
            Source::Alertmanager => TriggerKind::Alertmanager,
            Source::Grafana => TriggerKind::Grafana,
        }
    }
}

/// Go marshals a nil map or slice as `null`; read it as empty.
fn nullable<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

pub type Labels = BTreeMap<String, String>;

/// One notification: Alertmanager's webhook payload (version 4), which
/// Grafana's webhook contact point extends with a few fields of its own.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    #[serde(default, deserialize_with = "nullable")]
    pub version: String,
    #[serde(default, deserialize_with = "nullable")]
    pub group_key: String,
    #[serde(default, deserialize_with = "nullable")]
    pub status: String,
    #[serde(default, deserialize_with = "nullable")]
    pub receiver: String,
    pub alerts: Vec<Alert>,
    #[serde(default, deserialize_with = "nullable")]
    pub group_labels: Labels,
    #[serde(default, deserialize_with = "nullable")]
    pub common_labels: Labels,
    #[serde(default, deserialize_with = "nullable", rename = "externalURL")]
    pub external_url: String,
    #[serde(default)]
    pub truncated_alerts: u64,
    /// Grafana only.
    #[serde(default)]
    pub org_id: Option<i64>,
    #[serde(default)]
    pub title: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Firing,
    Resolved,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub status: Status,
    #[serde(deserialize_with = "nullable")]
    pub labels: Labels,
    #[serde(default, deserialize_with = "nullable")]
    pub annotations: Labels,
    #[serde(default, deserialize_with = "nullable")]
    pub starts_at: String,
    #[serde(default, deserialize_with = "nullable", rename = "generatorURL")]
    pub generator_url: String,
    #[serde(default, deserialize_with = "nullable")]
    pub fingerprint: String,
    /// Grafana only: the values of the rule's queries and expressions.
    #[serde(default)]
    pub values: Option<BTreeMap<String, f64>>,
}

impl Alert {
    pub fn name(&self) -> &str {
        self.labels
            .get("alertname")
            .map_or("(no alertname)", String::as_str)
    }

    /// The sender's fingerprint; Alertmanager before 0.19 sent none, so then
    /// one computed from the labels, which is what Alertmanager hashes too.
    pub fn fingerprint(&self) -> String {
        if !self.fingerprint.is_empty() {
            return self.fingerprint.clone();
        }
        let mut h = Sha256::new();
        for (k, v) in &self.labels {
            h.update(k.as_bytes());
            h.update([0xff]);
            h.update(v.as_bytes());
            h.update([0xff]);
        }
        hex::encode(&h.finalize()[..8])
    }

    /// The alert as dedupe knows it: this alert (its fingerprint) firing
    /// since this moment (its `startsAt`), whichever way it arrived. An
    /// Alertmanager webhook's resends, the other member of an HA pair and
    /// the same alert read from Alertmanager's API all give the same key;
    /// an alert that resolved and fires again has a new `startsAt`, so a
    /// new key. The notification's group is left out: the API has none, and
    /// one alert routed into two groups is still one alert.
    pub fn dedupe_key(&self, source: Source) -> String {
        format!(
            "{}\u{0}{}\u{0}{}",
            source.as_str(),
            self.fingerprint(),
            canonical_time(&self.starts_at)
        )
    }
}

/// One text for one instant. Alertmanager's webhook writes `startsAt` as Go
/// does, nanoseconds in the time's own offset
/// (`2026-12-04T06:00:00.120456789+01:00`); its API writes the same instant
/// to the millisecond (`2026-12-04T06:00:00.120+01:00`). Both become UTC
/// milliseconds (`2026-12-04T05:00:00.120Z`); text that is no such time is
/// kept as it is.
fn canonical_time(text: &str) -> String {
    let t = text.trim();
    let b = t.as_bytes();
    let (local, east_of_utc) = match b {
        [.., b'Z' | b'z'] => (&t[..t.len() - 1], 0i64),
        [.., sign @ (b'+' | b'-'), h1, h2, b':', m1, m2]
            if [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()) =>
        {
            let digit = |c: &u8| i64::from(c - b'0');
            let (hours, minutes) = (digit(h1) * 10 + digit(h2), digit(m1) * 10 + digit(m2));
            if hours > 23 || minutes > 59 {
                return text.to_string();
            }
            let secs = hours * 3600 + minutes * 60;
            (&t[..t.len() - 6], if *sign == b'-' { -secs } else { secs })
        }
        _ => return text.to_string(),
    };
    let Ok(as_if_utc) = humantime::parse_rfc3339_weak(local) else {
        return text.to_string();
    };
    let offset = Duration::from_secs(east_of_utc.unsigned_abs());
    let utc = if east_of_utc >= 0 {
        as_if_utc.checked_sub(offset)
    } else {
        as_if_utc.checked_add(offset)
    };
    match utc {
        Some(utc) => humantime::format_rfc3339_millis(utc).to_string(),
        None => text.to_string(),
    }
}

/// Parses a notification, saying what is wrong with it.
pub fn parse(source: Source, body: &[u8]) -> Result<Notification, String> {
    // serde would read a JSON array as a struct's fields in order, and say
    // "invalid length" about it; the payload is an object, say that.
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        Some(_) => {
            return Err(format!(
                "invalid {} payload: expected a JSON object",
                source.as_str()
            ))
        }
        None => return Err(format!("invalid {} payload: the body is empty", source.as_str())),
    }
    let n: Notification = serde_json::from_slice(body).map_err(|e| {
        let hint = match source {
            Source::Grafana if e.to_string().contains("`alerts`") => {
                " (Grafana's legacy alerting payload is not supported; use a webhook contact point of Grafana Alerting)"
            }
            _ => "",
        };
        format!("invalid {} payload: {e}{hint}", source.as_str())
    })?;
    if source == Source::Alertmanager && n.version != "4" {
        return Err(format!(
            "payload version {:?} is not supported: flightrec reads Alertmanager's webhook payload version \"4\"",
            n.version
        ));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn data(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/data/webhooks")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn real_alertmanager_payloads_parse() {
        let n = parse(Source::Alertmanager, &data("alertmanager-0.25-firing.json")).expect("firing");
        assert_eq!(n.version, "4");
        assert_eq!(n.alerts.len(), 1);
        let a = &n.alerts[0];
        assert_eq!(a.status, Status::Firing);
        assert_eq!(a.name(), "FixtureSlow");
        assert_eq!(a.fingerprint(), "a86b9db496aef75e");
        assert_eq!(a.labels["instance"], "127.0.0.1:46611");
        assert!(n.group_key.contains("FixtureSlow"));
        let r = parse(Source::Alertmanager, &data("alertmanager-0.25-resolved.json")).expect("resolved");
        assert_eq!(r.alerts[0].status, Status::Resolved);
        assert_eq!(r.alerts[0].fingerprint, a.fingerprint, "the same alert");
    }

    #[test]
    fn grafana_payload_parses_with_its_own_fields() {
        let n = parse(Source::Grafana, &data("grafana-firing.json")).expect("grafana");
        assert_eq!(n.org_id, Some(1));
        assert_eq!(n.alerts.len(), 2);
        assert_eq!(n.alerts[0].values.as_ref().and_then(|v| v.get("A")), Some(&0.734));
        assert_eq!(n.alerts[1].values, None, "null values");
        assert_eq!(n.alerts[1].status, Status::Resolved);
    }

    #[test]
    fn malformed_payloads_say_why() {
        let e = parse(
            Source::Alertmanager,
            b"{\"version\":\"4\",\"alerts\":[{\"status\":\"pending\",\"labels\":{}}]}",
        )
        .unwrap_err();
        assert!(e.contains("unknown variant `pending`"), "{e}");
        let e = parse(Source::Alertmanager, b"{\"version\":\"3\",\"alerts\":[]}").unwrap_err();
        assert!(e.contains("version \"3\" is not supported"), "{e}");
        let e = parse(Source::Alertmanager, b"{\"alerts\":").unwrap_err();
        assert!(e.contains("EOF while parsing"), "{e}");
        let e = parse(Source::Alertmanager, b" [\"4\", \"k\"]").unwrap_err();
        assert!(e.ends_with("expected a JSON object"), "{e}");
        let e = parse(Source::Grafana, b" \n").unwrap_err();
        assert!(e.ends_with("the body is empty"), "{e}");
        let e = parse(Source::Grafana, b"{\"ruleName\":\"x\",\"evalMatches\":[]}").unwrap_err();
        assert!(
            e.contains("missing field `alerts`") && e.contains("legacy"),
            "{e}"
        );
        let e = parse(
            Source::Alertmanager,
            b"{\"version\":\"4\",\"alerts\":[{\"status\":\"firing\",\"labels\":{\"a\":1}}]}",
        )
        .unwrap_err();
        assert!(e.contains("invalid type: integer"), "{e}");
    }

    #[test]
    fn the_webhook_and_the_api_give_one_alert_one_key() {
        // What Alertmanager 0.25 sent for one alert on its webhook and
        // answered for it on GET /api/v2/alerts.
        let alert = |starts_at: &str| Alert {
            status: Status::Firing,
            labels: Labels::from([("alertname".to_string(), "Y".to_string())]),
            annotations: Labels::new(),
            starts_at: starts_at.into(),
            generator_url: String::new(),
            fingerprint: "54007384a2d1a2b9".into(),
            values: None,
        };
        let webhook = alert("2026-12-04T06:00:00.120456789+01:00").dedupe_key(Source::Alertmanager);
        let api = alert("2026-12-04T06:00:00.120+01:00").dedupe_key(Source::Alertmanager);
        assert_eq!(webhook, api);
        assert!(webhook.ends_with("\u{0}2026-12-04T05:00:00.120Z"), "{webhook:?}");
        assert_eq!(
            alert("2026-12-04T06:14:22.603253919Z").dedupe_key(Source::Alertmanager),
            alert("2026-12-04T06:14:22.603Z").dedupe_key(Source::Alertmanager)
        );
        // Go drops trailing zeros of the fraction, and the fraction itself.
        assert_eq!(
            alert("2026-12-04T06:14:22.6Z").dedupe_key(Source::Alertmanager),
            alert("2026-12-04T06:14:22.600Z").dedupe_key(Source::Alertmanager)
        );
        assert_eq!(
            alert("2026-12-04T01:14:22-05:00").dedupe_key(Source::Alertmanager),
            alert("2026-12-04T06:14:22.000Z").dedupe_key(Source::Alertmanager)
        );
        // Fired again after resolving: a new startsAt, a new alert.
        assert_ne!(
            api,
            alert("2026-12-04T06:30:00.120+01:00").dedupe_key(Source::Alertmanager)
        );
        assert_ne!(
            api,
            alert("2026-12-04T06:00:00.120+01:00").dedupe_key(Source::Grafana)
        );
        // Whatever is not such a time is kept as sent, never a panic.
        for odd in [
            "",
            "soon",
            "0001-01-01T00:00:00Z",
            "2026-12-04T06:00:00+99:99",
            "é+01:00",
            "Z",
        ] {
            assert!(
                alert(odd).dedupe_key(Source::Alertmanager).ends_with(odd),
                "{odd:?}"
            );
        }
    }

    #[test]
    fn fingerprint_is_computed_from_labels_when_absent() {
        let mut a: Alert =
            serde_json::from_str(r#"{"status":"firing","labels":{"b":"2","a":"1"}}"#).expect("alert");
        let f = a.fingerprint();
        assert_eq!(f.len(), 16);
        a.labels.insert("c".into(), "3".into());
        assert_ne!(a.fingerprint(), f);
    }
}
