//! What the dispatcher needs to run, resolved from the engine's config (see
//! `engine/src/config/dispatch.rs`): receivers, routes, silences, the outbox, retry and
//! circuit-breaker parameters, and the receiver URL checks done at config load.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;
use sha2::{Digest, Sha256};

use super::outbox::OutboxSettings;
use super::payload::PayloadFormat;
use super::routing::RouteSettings;
use super::signing::Secret;
use super::silence::SilenceRecord;

/// Everything the dispatcher runs with.
#[derive(Clone, Debug)]
pub struct DispatchSettings {
    /// The alert log.
    pub outbox: OutboxSettings,
    /// Directory of the per-receiver dead-letter files (`<receiver>.jsonl`).
    pub dead_letter_dir: PathBuf,
    /// The receivers; names are unique.
    pub receivers: Vec<ReceiverSettings>,
    /// The routes, in order.
    pub routes: Vec<RouteSettings>,
    /// Silences from the config.
    pub silences: Vec<SilenceRecord>,
    /// Link to the engine's UI, sent as Alertmanager's `externalURL` / `generatorURL`.
    pub external_url: String,
    /// How Kafka receivers reach the brokers; required when there is one.
    pub kafka: Option<KafkaConnection>,
}

impl DispatchSettings {
    /// Settings with the outbox in `dir` (dead letters in `dir/dead-letters`) and nothing
    /// else: add receivers and routes.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        DispatchSettings {
            outbox: OutboxSettings::new(dir.join("outbox")),
            dead_letter_dir: dir.join("dead-letters"),
            receivers: Vec::new(),
            routes: Vec::new(),
            silences: Vec::new(),
            external_url: String::new(),
            kafka: None,
        }
    }
}

/// The Kafka connection of Kafka receivers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaConnection {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Extra librdkafka producer properties.
    pub properties: Vec<(String, String)>,
}

/// One receiver.
#[derive(Clone, Debug)]
pub struct ReceiverSettings {
    /// Unique name (used in metrics, dead-letter file names and the alert log).
    pub name: String,
    /// Where and how transitions are sent.
    pub kind: ReceiverKind,
    /// Requests in flight at once. At least 1.
    pub max_concurrency: usize,
    /// Most transitions in one grouped request. At least 1.
    pub max_batch: usize,
    /// Retries.
    pub retry: RetrySettings,
    /// Circuit breaker.
    pub breaker: BreakerSettings,
}

impl ReceiverSettings {
    /// A receiver with default limits (4 in flight, 100 per request, default retry and
    /// breaker).
    pub fn new(name: impl Into<String>, kind: ReceiverKind) -> Self {
        ReceiverSettings {
            name: name.into(),
            kind,
            max_concurrency: 4,
            max_batch: 100,
            retry: RetrySettings::default(),
            breaker: BreakerSettings::default(),
        }
    }

    /// A digest of where this receiver sends: a receiver disabled by 410 Gone stays disabled
    /// across restarts until this changes.
    pub fn fingerprint(&self) -> String {
        let target = match &self.kind {
            ReceiverKind::Webhook(w) => format!("webhook {} {}", w.url, w.format.as_str()),
            ReceiverKind::Kafka(k) => format!("kafka {}", k.topic),
        };
        hex::encode(&Sha256::digest(target.as_bytes())[..8])
    }

    /// `webhook` or `kafka`.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            ReceiverKind::Webhook(_) => "webhook",
            ReceiverKind::Kafka(_) => "kafka",
        }
    }
}

/// Where a receiver sends.
#[derive(Clone, Debug)]
pub enum ReceiverKind {
    /// HTTP POST of signed JSON.
    Webhook(WebhookSettings),
    /// Messages on a Kafka topic.
    Kafka(KafkaReceiverSettings),
}

/// A webhook receiver.
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    /// The URL, checked with [`validate_url`].
    pub url: Url,
    /// The signing key; without one, requests carry no `webhook-signature`.
    pub secret: Option<Secret>,
    /// Longest wait for one request, response body included.
    pub timeout: Duration,
    /// The body format.
    pub format: PayloadFormat,
}

/// What a Kafka receiver's messages are keyed by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KafkaKey {
    /// `rule/entity`: every transition of one alert in one partition, in order.
    #[default]
    Alert,
    /// The rule id.
    Rule,
    /// The entity.
    Entity,
}

/// A Kafka topic receiver. Each transition is one message whose value is the transition's
/// JSON, with headers `webhook-id` and `citybrain-id` (the transition id).
#[derive(Clone, Debug)]
pub struct KafkaReceiverSettings {
    /// The topic.
    pub topic: String,
    /// The message key.
    pub key: KafkaKey,
    /// Longest wait for the broker's acknowledgement of one message.
    pub timeout: Duration,
}

/// Retries of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetrySettings {
    /// Backoff before the first retry is up to this; it doubles per retry.
    pub base: Duration,
    /// The backoff is capped at this.
    pub max: Duration,
    /// A `Retry-After` longer than this is cut to it.
    pub max_retry_after: Duration,
    /// Give up (dead-letter) a request first tried this long ago; `None` retries for ever.
    pub give_up_after: Option<Duration>,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            base: Duration::from_millis(500),
            max: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(600),
            give_up_after: None,
        }
    }
}

/// The circuit breaker of a receiver: after `failures` failed attempts in a row no request is
/// tried for `cooldown`; then one probe request is (half-open); its success closes the
/// breaker, its failure opens it again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Consecutive failures that open the breaker; 0 never opens it.
    pub failures: u32,
    /// How long it stays open.
    pub cooldown: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            failures: 5,
            cooldown: Duration::from_secs(30),
        }
    }
}

/// One entry of an allow-list of receiver hosts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostRule {
    /// This host name exactly (case-insensitive) or this IP address.
    Exact(String),
    /// `*.example.com`: any host under `example.com` (not `example.com` itself).
    Suffix(String),
    /// `10.0.0.0/8`, `fd00::/8`: IP addresses in a network.
    Cidr(IpAddr, u8),
}

/// An allow-list entry or a URL is not acceptable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// The URL does not parse.
    #[error("not a URL: {0}")]
    Parse(String),
    /// Not http or https.
    #[error("scheme `{0}` is not allowed: use http or https")]
    Scheme(String),
    /// No host.
    #[error("the URL has no host")]
    NoHost,
    /// User name or password in the URL.
    #[error("credentials in the URL are not allowed: use `secret` for signing")]
    Credentials,
    /// The host is not on the allow-list.
    #[error("host `{0}` is not in `allowed_hosts`")]
    NotAllowed(String),
    /// An allow-list entry does not parse.
    #[error("`{0}` is not a host name, IP address or CIDR network")]
    BadRule(String),
}

impl HostRule {
    /// Parses `host.name`, `*.domain`, an IP address or `address/prefix`.
    pub fn parse(text: &str) -> Result<HostRule, UrlError> {
        let text = text.trim();
        let bad = || UrlError::BadRule(text.to_string());
        if let Some((address, prefix)) = text.split_once('/') {
            let address: IpAddr = address.parse().map_err(|_| bad())?;
            let prefix: u8 = prefix.parse().map_err(|_| bad())?;
            let bits = if address.is_ipv4() { 32 } else { 128 };
            if prefix > bits {
                return Err(bad());
            }
            return Ok(HostRule::Cidr(address, prefix));
        }
        if let Ok(address) = text.trim_matches(['[', ']']).parse::<IpAddr>() {
            return Ok(HostRule::Exact(address.to_string()));
        }
        let host_like = |s: &str| {
            !s.is_empty()
                && s.split('.').all(|part| {
                    !part.is_empty()
                        && part
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                })
        };
        if let Some(domain) = text.strip_prefix("*.") {
            return host_like(domain)
                .then(|| HostRule::Suffix(domain.to_ascii_lowercase()))
                .ok_or_else(bad);
        }
        host_like(text)
            .then(|| HostRule::Exact(text.to_ascii_lowercase()))
            .ok_or_else(bad)
    }

    fn allows(&self, host: &url::Host<&str>) -> bool {
        let ip: Option<IpAddr> = match host {
            url::Host::Ipv4(a) => Some(IpAddr::V4(*a)),
            url::Host::Ipv6(a) => Some(IpAddr::V6(*a)),
            url::Host::Domain(_) => None,
        };
        match (self, host, ip) {
            (HostRule::Exact(name), url::Host::Domain(d), _) => d.eq_ignore_ascii_case(name),
            (HostRule::Exact(name), _, Some(ip)) => ip.to_string() == *name,
            (HostRule::Suffix(domain), url::Host::Domain(d), _) => {
                let d = d.to_ascii_lowercase();
                d.strip_suffix(domain.as_str())
                    .is_some_and(|head| head.ends_with('.') && head.len() > 1)
            }
            (HostRule::Cidr(net, prefix), _, Some(ip)) => in_network(ip, *net, *prefix),
            _ => false,
        }
    }
}

fn in_network(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

/// Checks a receiver URL: it parses, is http or https, has a host and no credentials, and the
/// host is allowed by one of `allowed` when that is not empty. Host names are compared as
/// written; what they resolve to is not checked.
pub fn validate_url(text: &str, allowed: &[HostRule]) -> Result<Url, UrlError> {
    let url = Url::parse(text.trim()).map_err(|e| UrlError::Parse(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(UrlError::Scheme(url.scheme().to_string()));
    }
    let host = url.host().ok_or(UrlError::NoHost)?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlError::Credentials);
    }
    if !allowed.is_empty() && !allowed.iter().any(|rule| rule.allows(&host)) {
        return Err(UrlError::NotAllowed(host.to_string()));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert!(validate_url("http://127.0.0.1:8080/hook", &[]).is_ok());
        assert!(validate_url("https://dispatch.ordos.example/alerts", &[]).is_ok());
        assert_eq!(
            validate_url("ftp://x/", &[]),
            Err(UrlError::Scheme("ftp".into()))
        );
        assert_eq!(
            validate_url("file:///etc/passwd", &[]),
            Err(UrlError::Scheme("file".into()))
        );
        assert_eq!(
            validate_url("http://user:pw@host/", &[]),
            Err(UrlError::Credentials)
        );
        assert!(matches!(
            validate_url("not a url", &[]),
            Err(UrlError::Parse(_))
        ));
    }

    #[test]
    fn allow_list() {
        let rules: Vec<HostRule> = [
            "10.0.0.0/8",
            "*.ordos.example",
            "hooks.example",
            "::1",
            "fd00::/8",
        ]
        .iter()
        .map(|r| HostRule::parse(r).unwrap())
        .collect();
        let ok = |url: &str| validate_url(url, &rules).is_ok();
        assert!(ok("http://10.1.2.3/x"));
        assert!(!ok("http://11.1.2.3/x"));
        assert!(ok("https://mine.ordos.example/x"));
        assert!(ok("https://A.B.ORDOS.example/x"));
        assert!(!ok("https://ordos.example/x"));
        assert!(!ok("https://evilordos.example/x"));
        assert!(ok("http://HOOKS.example:9000/x"));
        assert!(!ok("http://hooks.example.evil/x"));
        assert!(ok("http://[::1]:80/x"));
        assert!(ok("http://[fd12::5]/x"));
        assert!(!ok("http://[fe80::1]/x"));
        assert_eq!(
            validate_url("http://127.0.0.1/", &rules),
            Err(UrlError::NotAllowed("127.0.0.1".into()))
        );
        assert_eq!(
            HostRule::parse("127.0.0.1/33"),
            Err(UrlError::BadRule("127.0.0.1/33".into()))
        );
        assert_eq!(
            HostRule::parse("bad host"),
            Err(UrlError::BadRule("bad host".into()))
        );
        assert_eq!(
            HostRule::parse("0.0.0.0/0").map(|r| r.allows(&url::Host::Ipv4([8, 8, 8, 8].into()))),
            Ok(true)
        );
    }
}
