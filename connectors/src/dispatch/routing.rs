//! Routing: which receivers a transition goes to, Alertmanager style.
//!
//! Routes are tried in order. A route matches when every one of its [`Matcher`]s matches the
//! transition's labels (a route without matchers matches everything). The first matching route
//! ends the search unless it has `continue = true`, in which case later routes are tried too.
//! A receiver reached through several routes gets the transition once, with the grouping and
//! repeat settings of the first route that reached it.
//!
//! Matchers are written `label = "value"`, `label != "value"`, `label =~ "regex"` and
//! `label !~ "regex"`. Regexes are anchored at both ends, as in Alertmanager. A label the
//! transition lacks has the value `""`.
//!
//! The labels of a transition are its `labels` plus `rule`, `entity`, `domain`, `severity` and
//! `state` (`firing` or `resolved`) where its labels lack them; see [`alert_labels`].

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use citybrain_model::AlertTransition;
use regex::Regex;

/// How a matcher compares a label's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchOp {
    /// `=`: equal.
    Equal,
    /// `!=`: not equal.
    NotEqual,
    /// `=~`: the whole value matches the regex.
    Regex,
    /// `!~`: the whole value does not match the regex.
    NotRegex,
}

impl MatchOp {
    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        }
    }
}

/// One label condition.
#[derive(Clone, Debug)]
pub struct Matcher {
    label: String,
    op: MatchOp,
    value: String,
    regex: Option<Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.label == other.label && self.op == other.op && self.value == other.value
    }
}

/// A matcher could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MatcherError {
    /// No operator between the label and the value.
    #[error("expected `label = \"value\"` (operators: =, !=, =~, !~)")]
    Syntax,
    /// The label name is empty or has characters other than letters, digits and `_`.
    #[error("`{0}` is not a label name (letters, digits and `_`)")]
    Label(String),
    /// A quoted value is not closed, or has something after its closing quote.
    #[error("the value must be one quoted string: {0}")]
    Value(String),
    /// The regex does not compile.
    #[error("invalid regex: {0}")]
    Regex(String),
}

fn is_label_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

/// Reads a value: a double-quoted string (with `\"` and `\\` escapes) or a bare word.
fn parse_value(text: &str) -> Result<String, MatcherError> {
    let text = text.trim();
    let Some(rest) = text.strip_prefix('"') else {
        if text.contains(char::is_whitespace) || text.contains('"') {
            return Err(MatcherError::Value(format!(
                "`{text}` (quote values with spaces)"
            )));
        }
        return Ok(text.to_string());
    };
    let mut out = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped @ ('"' | '\\')) => out.push(escaped),
                Some('n') => out.push('\n'),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => return Err(MatcherError::Value("unterminated escape".to_string())),
            },
            '"' => {
                let trailing: String = chars.collect();
                if !trailing.trim().is_empty() {
                    return Err(MatcherError::Value(format!(
                        "unexpected `{}` after the closing quote",
                        trailing.trim()
                    )));
                }
                return Ok(out);
            }
            other => out.push(other),
        }
    }
    Err(MatcherError::Value("missing closing quote".to_string()))
}

impl Matcher {
    /// A matcher on `label` with `op` and `value` (a regex for `=~` and `!~`).
    pub fn new(label: &str, op: MatchOp, value: &str) -> Result<Matcher, MatcherError> {
        if !is_label_name(label) {
            return Err(MatcherError::Label(label.to_string()));
        }
        let regex = match op {
            MatchOp::Regex | MatchOp::NotRegex => Some(
                Regex::new(&format!("^(?:{value})$"))
                    .map_err(|e| MatcherError::Regex(e.to_string()))?,
            ),
            MatchOp::Equal | MatchOp::NotEqual => None,
        };
        Ok(Matcher {
            label: label.to_string(),
            op,
            value: value.to_string(),
            regex,
        })
    }

    /// Parses `label = "value"`, `label != "value"`, `label =~ "regex"` or
    /// `label !~ "regex"`. The value may be bare when it has no spaces or quotes.
    pub fn parse(text: &str) -> Result<Matcher, MatcherError> {
        let at = text.find(['=', '!']).ok_or(MatcherError::Syntax)?;
        let (label, rest) = text.split_at(at);
        let (op, value) = if let Some(v) = rest.strip_prefix("=~") {
            (MatchOp::Regex, v)
        } else if let Some(v) = rest.strip_prefix("!~") {
            (MatchOp::NotRegex, v)
        } else if let Some(v) = rest.strip_prefix("!=") {
            (MatchOp::NotEqual, v)
        } else if let Some(v) = rest.strip_prefix("==") {
            (MatchOp::Equal, v)
        } else if let Some(v) = rest.strip_prefix('=') {
            (MatchOp::Equal, v)
        } else {
            return Err(MatcherError::Syntax);
        };
        Matcher::new(label.trim(), op, &parse_value(value)?)
    }

    /// The label this matcher looks at.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The comparison.
    pub fn op(&self) -> MatchOp {
        self.op
    }

    /// The value or regex, as written.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Whether `labels` satisfy this matcher; a missing label counts as `""`.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.label).map_or("", String::as_str);
        match (self.op, &self.regex) {
            (MatchOp::Equal, _) => value == self.value,
            (MatchOp::NotEqual, _) => value != self.value,
            (MatchOp::Regex, Some(re)) => re.is_match(value),
            (MatchOp::NotRegex, Some(re)) => !re.is_match(value),
            // `new` always compiles the regex of the regex operators.
            (MatchOp::Regex | MatchOp::NotRegex, None) => false,
        }
    }
}

/// `label="value"` with the value quoted and escaped, so it parses back to the same matcher.
impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let escaped = self.value.replace('\\', "\\\\").replace('"', "\\\"");
        write!(f, "{}{}\"{}\"", self.label, self.op.as_str(), escaped)
    }
}

/// Whether every matcher matches (true for no matchers).
pub fn all_match(matchers: &[Matcher], labels: &BTreeMap<String, String>) -> bool {
    matchers.iter().all(|m| m.matches(labels))
}

/// The labels routes and silences match on: the transition's labels plus `rule`, `entity`,
/// `domain`, `severity` and `state` where they are missing.
pub fn alert_labels(transition: &AlertTransition) -> BTreeMap<String, String> {
    let mut labels = transition.labels.clone();
    for (name, value) in [
        ("rule", transition.rule.as_str()),
        ("entity", transition.entity.as_str()),
        ("domain", transition.domain.as_str()),
        ("severity", transition.severity.as_str()),
        ("state", transition.state.as_str()),
    ] {
        labels
            .entry(name.to_string())
            .or_insert_with(|| value.to_string());
    }
    labels
}

/// One route.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteSettings {
    /// All must match; none matches everything.
    pub matchers: Vec<Matcher>,
    /// The receivers, by name.
    pub receivers: Vec<String>,
    /// Keep trying later routes after this one matched.
    pub continue_matching: bool,
    /// Transitions for one receiver arriving within this window go in one request (webhooks
    /// only). Zero sends each transition on its own.
    pub group_wait: Duration,
    /// Send a reminder while an alert stays firing, this long after the last notification.
    pub repeat_interval: Option<Duration>,
}

/// Where one transition goes, for one receiver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Index of the receiver in the dispatcher's receiver list.
    pub receiver: usize,
    /// The grouping window of the route that reached the receiver.
    pub group_wait: Duration,
    /// The repeat interval of that route.
    pub repeat_interval: Option<Duration>,
}

/// The compiled routes, with receiver names resolved to indexes.
#[derive(Clone, Debug)]
pub(crate) struct Router {
    routes: Vec<(RouteSettings, Vec<usize>)>,
}

impl Router {
    /// Resolves receiver names; an unknown name is an error naming it.
    pub(crate) fn new(routes: &[RouteSettings], receivers: &[String]) -> Result<Router, String> {
        let mut compiled = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            let mut indexes = Vec::new();
            for name in &route.receivers {
                let index = receivers
                    .iter()
                    .position(|r| r == name)
                    .ok_or_else(|| format!("route {i} names unknown receiver `{name}`"))?;
                indexes.push(index);
            }
            compiled.push((route.clone(), indexes));
        }
        Ok(Router { routes: compiled })
    }

    /// The targets of a transition with `labels`, each receiver once, in route order.
    pub(crate) fn route(&self, labels: &BTreeMap<String, String>) -> Vec<Target> {
        let mut targets: Vec<Target> = Vec::new();
        for (route, receivers) in &self.routes {
            if !all_match(&route.matchers, labels) {
                continue;
            }
            for &receiver in receivers {
                if targets.iter().all(|t| t.receiver != receiver) {
                    targets.push(Target {
                        receiver,
                        group_wait: route.group_wait,
                        repeat_interval: route.repeat_interval,
                    });
                }
            }
            if !route.continue_matching {
                break;
            }
        }
        targets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_every_operator_and_prints_back() {
        let cases = [
            (
                "severity = \"critical\"",
                "severity",
                MatchOp::Equal,
                "critical",
            ),
            ("severity=critical", "severity", MatchOp::Equal, "critical"),
            (
                "mine != \"jungar-1\"",
                "mine",
                MatchOp::NotEqual,
                "jungar-1",
            ),
            ("face =~ \"jungar-.*\"", "face", MatchOp::Regex, "jungar-.*"),
            ("level !~ '1'", "level", MatchOp::NotRegex, "'1'"),
            (
                "summary = \"say \\\"hi\\\"\"",
                "summary",
                MatchOp::Equal,
                "say \"hi\"",
            ),
        ];
        for (text, label, op, value) in cases {
            let m = Matcher::parse(text).unwrap();
            assert_eq!((m.label(), m.op(), m.value()), (label, op, value), "{text}");
            assert_eq!(Matcher::parse(&m.to_string()).unwrap(), m, "{text}");
        }
        assert_eq!(
            Matcher::parse("severity critical"),
            Err(MatcherError::Syntax)
        );
        assert_eq!(
            Matcher::parse("sev-erity = \"x\""),
            Err(MatcherError::Label("sev-erity".into()))
        );
        assert_eq!(
            Matcher::parse("= \"x\""),
            Err(MatcherError::Label(String::new()))
        );
        assert!(matches!(
            Matcher::parse("a = \"x"),
            Err(MatcherError::Value(_))
        ));
        assert!(matches!(
            Matcher::parse("a = \"x\" y"),
            Err(MatcherError::Value(_))
        ));
        assert!(matches!(
            Matcher::parse("a = two words"),
            Err(MatcherError::Value(_))
        ));
        assert!(matches!(
            Matcher::parse("a =~ \"(\""),
            Err(MatcherError::Regex(_))
        ));
    }

    #[test]
    fn matching_is_anchored_and_missing_labels_are_empty() {
        let l = labels(&[("mine", "jungar-1"), ("severity", "critical")]);
        let m = |t: &str| Matcher::parse(t).unwrap().matches(&l);
        assert!(m("mine = \"jungar-1\""));
        assert!(!m("mine = \"jungar\""));
        assert!(m("mine =~ \"jungar-.*\""));
        assert!(!m("mine =~ \"jungar\"")); // anchored
        assert!(m("mine !~ \"dalad.*\""));
        assert!(m("severity != \"info\""));
        assert!(m("district = \"\"")); // missing = empty
        assert!(!m("district =~ \".+\""));
        assert!(m("severity =~ \"warning|critical\""));
    }

    fn route(matchers: &[&str], receivers: &[&str], cont: bool) -> RouteSettings {
        RouteSettings {
            matchers: matchers
                .iter()
                .map(|m| Matcher::parse(m).unwrap())
                .collect(),
            receivers: receivers.iter().map(|r| r.to_string()).collect(),
            continue_matching: cont,
            group_wait: Duration::ZERO,
            repeat_interval: None,
        }
    }

    #[test]
    fn first_match_stops_unless_continue() {
        let names: Vec<String> = ["rescue", "county", "all", "farm"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut routes = vec![
            route(
                &["domain = \"mine\"", "severity = \"critical\""],
                &["rescue"],
                true,
            ),
            route(&["domain = \"mine\""], &["county"], false),
            route(&[], &["all", "rescue"], false),
        ];
        routes[0].group_wait = Duration::from_millis(50);
        let router = Router::new(&routes, &names).unwrap();
        let to = |pairs: &[(&str, &str)]| -> Vec<(usize, u128)> {
            router
                .route(&labels(pairs))
                .iter()
                .map(|t| (t.receiver, t.group_wait.as_millis()))
                .collect()
        };
        // Critical mine: route 0 (continue) then route 1 (stops).
        assert_eq!(
            to(&[("domain", "mine"), ("severity", "critical")]),
            vec![(0, 50), (1, 0)]
        );
        // Warning mine: route 1 only.
        assert_eq!(
            to(&[("domain", "mine"), ("severity", "warning")]),
            vec![(1, 0)]
        );
        // Farm: the catch-all.
        assert_eq!(to(&[("domain", "farm")]), vec![(2, 0), (0, 0)]);
        // Continue into the catch-all: rescue keeps route 0's settings and appears once.
        routes[1].continue_matching = true;
        let router = Router::new(&routes, &names).unwrap();
        let targets = router.route(&labels(&[("domain", "mine"), ("severity", "critical")]));
        let got: Vec<(usize, u128)> = targets
            .iter()
            .map(|t| (t.receiver, t.group_wait.as_millis()))
            .collect();
        assert_eq!(got, vec![(0, 50), (1, 0), (2, 0)]);
        assert_eq!(
            Router::new(&[route(&[], &["nobody"], false)], &names).err(),
            Some("route 0 names unknown receiver `nobody`".to_string())
        );
    }
}
