//! Who may post alerts: the API's bearer token, basic auth, or Grafana's HMAC signature.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use http::{header, HeaderMap, HeaderName};
use sha2::Sha256;

use super::payload::Source;
use crate::config::WebhookConfig;
use crate::secret::{constant_time_eq, Secret};

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("cannot read {what} from {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} file {path} is empty")]
    Empty { what: &'static str, path: String },
    #[error("webhooks.{key}: {name:?} is not a valid HTTP header name")]
    Header { key: &'static str, name: String },
}

/// Why a request was refused; the text goes to the log and the answer, so
/// it never holds a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("this endpoint needs {0}")]
    Missing(String),
    #[error("bearer token does not match")]
    BearerMismatch,
    #[error("bearer tokens are not accepted here (no server.token_file); use basic auth")]
    BearerNotConfigured,
    #[error("basic auth user or password does not match")]
    BasicMismatch,
    #[error("basic auth is not configured here (webhooks.basic_auth_user); use the bearer token")]
    BasicNotConfigured,
    #[error("Authorization: Basic is not base64 of user:password")]
    BasicMalformed,
    #[error("missing {0} header: Grafana signs its requests when the contact point's HMAC secret is set")]
    SignatureMissing(String),
    #[error("{0} is not a hex HMAC-SHA256")]
    SignatureMalformed(String),
    #[error("HMAC signature does not match the body (is the contact point's secret webhooks.grafana_hmac_secret_file?)")]
    SignatureMismatch,
    #[error("missing {0} header (webhooks.grafana_hmac_timestamp_header is set: set the same Timestamp Header in the contact point)")]
    TimestampMissing(String),
    #[error("{0} is not Unix seconds")]
    TimestampMalformed(String),
    #[error("signature timestamp is {0}s away from now, more than webhooks.grafana_hmac_max_skew")]
    TimestampSkew(u64),
}

struct HmacAuth {
    secret: Secret,
    header: HeaderName,
    timestamp_header: Option<HeaderName>,
    max_skew: Duration,
}

/// The credentials webhooks accept.
pub struct Auth {
    bearer: Option<Secret>,
    basic: Option<(String, Secret)>,
    hmac: Option<HmacAuth>,
}

fn read_secret(what: &'static str, path: &Path) -> Result<Secret, WebhookError> {
    let text = std::fs::read_to_string(path).map_err(|source| WebhookError::Read {
        what,
        path: path.display().to_string(),
        source,
    })?;
    // A trailing newline from `echo secret > file` is not part of the secret.
    let text = text.trim_end_matches(['\n', '\r']);
    if text.is_empty() {
        return Err(WebhookError::Empty {
            what,
            path: path.display().to_string(),
        });
    }
    Ok(Secret::new(text.to_string()))
}

impl Auth {
    /// Reads the secret files named by the config. `bearer` is the server's API token.
    pub fn load(cfg: &WebhookConfig, bearer: Option<Secret>) -> Result<Auth, WebhookError> {
        let password = match (&cfg.basic_auth_password_file, &cfg.basic_auth_password) {
            (Some(path), _) => Some(read_secret("the basic auth password", path)?),
            (None, p) => p.clone(),
        };
        let basic = cfg.basic_auth_user.clone().zip(password);
        let hmac_secret = match (&cfg.grafana_hmac_secret_file, &cfg.grafana_hmac_secret) {
            (Some(path), _) => Some(read_secret("the Grafana HMAC secret", path)?),
            (None, s) => s.clone(),
        };
        // The config check refuses bad header names already; this one must
        // not turn the signature check off if one ever got through.
        let header = |key: &'static str, name: &str| {
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| WebhookError::Header {
                key,
                name: name.to_string(),
            })
        };
        let hmac = match hmac_secret {
            None => None,
            Some(secret) => Some(HmacAuth {
                secret,
                header: header("grafana_hmac_header", &cfg.grafana_hmac_header)?,
                timestamp_header: match &cfg.grafana_hmac_timestamp_header {
                    Some(h) => Some(header("grafana_hmac_timestamp_header", h)?),
                    None => None,
                },
                max_skew: cfg.grafana_hmac_max_skew,
            }),
        };
        Ok(Auth { bearer, basic, hmac })
    }

    pub(super) fn challenge(&self) -> &'static str {
        if self.basic.is_some() {
            "Basic realm=\"flightrec\""
        } else {
            "Bearer"
        }
    }

    /// Bearer token or basic auth, when either is configured.
    pub fn check_credentials(&self, headers: &HeaderMap) -> Result<(), AuthError> {
        if self.bearer.is_none() && self.basic.is_none() {
            return Ok(());
        }
        let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let (scheme, value) = given.and_then(|g| g.trim().split_once(' ')).unwrap_or_default();
        if scheme.eq_ignore_ascii_case("bearer") {
            let token = self.bearer.as_ref().ok_or(AuthError::BearerNotConfigured)?;
            return if token.matches(value.trim().as_bytes()) {
                Ok(())
            } else {
                Err(AuthError::BearerMismatch)
            };
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let (user, password) = self.basic.as_ref().ok_or(AuthError::BasicNotConfigured)?;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(value.trim())
                .map_err(|_| AuthError::BasicMalformed)?;
            let text = String::from_utf8(decoded).map_err(|_| AuthError::BasicMalformed)?;
            let (u, p) = text.split_once(':').ok_or(AuthError::BasicMalformed)?;
            // Both compared whatever the first gives, so timing tells nothing.
            let user_ok = constant_time_eq(u.as_bytes(), user.as_bytes());
            let password_ok = password.matches(p.as_bytes());
            return if user_ok && password_ok {
                Ok(())
            } else {
                Err(AuthError::BasicMismatch)
            };
        }
        let wanted = match (&self.bearer, &self.basic) {
            (Some(_), Some(_)) => {
                "Authorization: Bearer <token> (server.token_file) or basic auth (webhooks.basic_auth_user)"
            }
            (Some(_), None) => "Authorization: Bearer <token> (server.token_file)",
            _ => "basic auth (webhooks.basic_auth_user)",
        };
        Err(AuthError::Missing(wanted.into()))
    }

    /// Grafana's signature: hex HMAC-SHA256 of the body, or of
    /// `<timestamp>:<body>` when a timestamp header is configured.
    fn check_hmac(h: &HmacAuth, headers: &HeaderMap, body: &[u8], now: SystemTime) -> Result<(), AuthError> {
        let sig_text = headers
            .get(&h.header)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| AuthError::SignatureMissing(h.header.to_string()))?;
        let sig =
            hex::decode(sig_text.trim()).map_err(|_| AuthError::SignatureMalformed(h.header.to_string()))?;
        let mut mac = Hmac::<Sha256>::new_from_slice(h.secret.expose().as_bytes())
            .map_err(|_| AuthError::SignatureMismatch)?;
        if let Some(th) = &h.timestamp_header {
            let ts_text = headers
                .get(th)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| AuthError::TimestampMissing(th.to_string()))?;
            let ts: i64 = ts_text
                .trim()
                .parse()
                .map_err(|_| AuthError::TimestampMalformed(th.to_string()))?;
            let now_s = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
            let skew = now_s.abs_diff(ts);
            if skew > h.max_skew.as_secs() {
                return Err(AuthError::TimestampSkew(skew));
            }
            mac.update(ts_text.trim().as_bytes());
            mac.update(b":");
        }
        mac.update(body);
        mac.verify_slice(&sig).map_err(|_| AuthError::SignatureMismatch)
    }

    /// Alertmanager: the credentials. Grafana: its signature when an HMAC
    /// secret is configured (it proves the sender knows the secret, so it
    /// is enough on its own), else the credentials.
    pub fn check(
        &self,
        source: Source,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), AuthError> {
        match (source, &self.hmac) {
            (Source::Grafana, Some(h)) => Self::check_hmac(h, headers, body, now),
            _ => self.check_credentials(headers),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn auth(bearer: Option<&str>, basic: Option<(&str, &str)>, hmac: Option<(&str, Option<&str>)>) -> Auth {
        let cfg = WebhookConfig {
            basic_auth_user: basic.map(|b| b.0.to_string()),
            basic_auth_password: basic.map(|b| Secret::new(b.1.to_string())),
            grafana_hmac_secret: hmac.map(|h| Secret::new(h.0.to_string())),
            grafana_hmac_timestamp_header: hmac.and_then(|h| h.1.map(String::from)),
            ..WebhookConfig::default()
        };
        Auth::load(&cfg, bearer.map(|b| Secret::new(b.into()))).expect("auth")
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn bearer_and_basic_auth() {
        let now = SystemTime::now();
        let open = auth(None, None, None);
        assert_eq!(open.check(Source::Alertmanager, &headers(&[]), b"", now), Ok(()));

        let a = auth(Some("tok"), Some(("am", "pw:with:colons")), None);
        let check = |h: &[(&str, &str)]| a.check(Source::Alertmanager, &headers(h), b"", now);
        assert_eq!(check(&[("authorization", "Bearer tok")]), Ok(()));
        assert_eq!(check(&[("authorization", "bearer  tok ")]), Ok(()));
        assert_eq!(
            check(&[("authorization", "Bearer nope")]),
            Err(AuthError::BearerMismatch)
        );
        // base64("am:pw:with:colons")
        assert_eq!(
            check(&[("authorization", "Basic YW06cHc6d2l0aDpjb2xvbnM=")]),
            Ok(())
        );
        // base64("am:wrong")
        assert_eq!(
            check(&[("authorization", "Basic YW06d3Jvbmc=")]),
            Err(AuthError::BasicMismatch)
        );
        assert_eq!(
            check(&[("authorization", "Basic !!!")]),
            Err(AuthError::BasicMalformed)
        );
        let missing = check(&[]).unwrap_err();
        assert!(matches!(missing, AuthError::Missing(_)));
        assert!(missing.to_string().contains("Bearer") && missing.to_string().contains("basic"));

        let only_bearer = auth(Some("tok"), None, None);
        assert_eq!(
            only_bearer.check(
                Source::Alertmanager,
                &headers(&[("authorization", "Basic YW06d3Jvbmc=")]),
                b"",
                now
            ),
            Err(AuthError::BasicNotConfigured)
        );
        let only_basic = auth(None, Some(("am", "pw")), None);
        assert_eq!(
            only_basic.check(
                Source::Grafana,
                &headers(&[("authorization", "Bearer tok")]),
                b"",
                now
            ),
            Err(AuthError::BearerNotConfigured)
        );
    }

    #[test]
    fn a_bad_hmac_header_name_fails_closed() {
        let cfg = WebhookConfig {
            grafana_hmac_secret: Some(Secret::new("s".into())),
            grafana_hmac_timestamp_header: Some("bad header".into()),
            ..WebhookConfig::default()
        };
        assert!(matches!(
            Auth::load(&cfg, None),
            Err(WebhookError::Header {
                key: "grafana_hmac_timestamp_header",
                ..
            })
        ));
    }

    // Expected signatures computed independently:
    //   printf '%s' '{"a":1}' | openssl dgst -sha256 -hmac s3cret
    //   printf '%s' '1700000000:{"a":1}' | openssl dgst -sha256 -hmac s3cret
    const SIG_BODY: &str = "5910e62016ef5034272c926c27071992a465c2335cecf41851bda071577f4f6d";

    const SIG_TS: &str = "05d9bc30f0201f409fa39328f2417ecd7da92ccf4e9bdb80fa96f8518b0dd0a3";

    #[test]
    fn grafana_hmac_signature() {
        let body = br#"{"a":1}"#;
        let a = auth(Some("tok"), None, Some(("s3cret", None)));
        let now = SystemTime::now();
        let g = |h: &[(&str, &str)]| a.check(Source::Grafana, &headers(h), body, now);
        assert_eq!(
            g(&[("x-grafana-alerting-signature", SIG_BODY)]),
            Ok(()),
            "sufficient alone"
        );
        assert_eq!(
            g(&[
                ("x-grafana-alerting-signature", SIG_BODY),
                ("authorization", "Bearer nope")
            ]),
            Ok(()),
            "the signature decides, not the bearer"
        );
        assert_eq!(
            g(&[("authorization", "Bearer tok")]),
            Err(AuthError::SignatureMissing("x-grafana-alerting-signature".into()))
        );
        let mut wrong = SIG_BODY.to_string();
        wrong.replace_range(0..1, "1");
        assert_eq!(
            g(&[("x-grafana-alerting-signature", &wrong)]),
            Err(AuthError::SignatureMismatch)
        );
        assert_eq!(
            g(&[("x-grafana-alerting-signature", "zz")]),
            Err(AuthError::SignatureMalformed(
                "x-grafana-alerting-signature".into()
            ))
        );
        // Alertmanager is not signed: its credentials are checked.
        assert_eq!(
            a.check(
                Source::Alertmanager,
                &headers(&[("authorization", "Bearer tok")]),
                body,
                now
            ),
            Ok(())
        );

        let t = auth(None, None, Some(("s3cret", Some("X-Grafana-Alerting-Timestamp"))));
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let sig = |h: &[(&str, &str)], now| t.check(Source::Grafana, &headers(h), body, now);
        let good = [
            ("x-grafana-alerting-signature", SIG_TS),
            ("x-grafana-alerting-timestamp", "1700000000"),
        ];
        assert_eq!(sig(&good, at + Duration::from_secs(30)), Ok(()));
        assert_eq!(
            sig(&good, at + Duration::from_secs(3600)),
            Err(AuthError::TimestampSkew(3600))
        );
        assert_eq!(
            sig(
                &[
                    ("x-grafana-alerting-signature", SIG_TS),
                    ("x-grafana-alerting-timestamp", "1700000001")
                ],
                at
            ),
            Err(AuthError::SignatureMismatch),
            "the timestamp is signed"
        );
        assert_eq!(
            sig(&[("x-grafana-alerting-signature", SIG_TS)], at),
            Err(AuthError::TimestampMissing("x-grafana-alerting-timestamp".into()))
        );
    }
}
