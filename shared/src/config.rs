//! Reading a program's configuration: one [`Reader`] over a lookup closure, typed readers, and
//! one problem type. Each of the five programs parses its vars and secrets once, through it, so
//! every problem is reported together and every value is read by the same rules:
//!
//! - **Text** is trimmed of surrounding whitespace; an empty value counts as unset.
//! - **Secrets** follow the same rule, on every side: surrounding ASCII whitespace is trimmed
//!   (a secret stored with `echo … | wrangler secret put` ends in a newline), then what is left
//!   must be at least the secret's minimum length. Inner bytes all count. A secret's value never
//!   reaches a problem, a log line or a `Debug` dump.
//! - A **number**, **duration** or **URL** that is set but unusable is a problem, and the
//!   default stands in so reading can go on; any problem refuses the whole configuration.
//!
//! Modelled on linkerd2-proxy's `linkerd/app/src/env.rs`: one way to read a named value through a
//! parse function, reused by small typed parsers.

use std::convert::Infallible;
use std::fmt;
use std::ops::RangeInclusive;
use std::time::Duration;

use crate::public_url;
use crate::secret::Secret;

/// What is wrong with one setting: a fact, never a secret's value. `D` is the program's own
/// facts about its structured settings (region tables, key sets…).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigIssue<D = Infallible> {
    /// Required and not set.
    #[error("is not set")]
    Missing,
    /// Not set, and something that is configured needs it.
    #[error("is not set, and {0} needs it")]
    NeededBy(&'static str),
    /// Not a whole number.
    #[error("is not a whole number")]
    NotANumber,
    /// A whole number outside the accepted range.
    #[error("is not from {min} to {max}")]
    OutOfRange {
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value.
        max: u64,
    },
    /// Not an absolute `http://` or `https://` URL with a host.
    #[error("is not an http(s) URL")]
    NotAUrl,
    /// An `http://` URL to a host other than loopback, where only https is safe.
    #[error("is not an https URL (http only to a loopback host)")]
    InsecureUrl,
    /// None of the accepted words.
    #[error("is not one of {}", .0.join(", "))]
    NotOneOf(&'static [&'static str]),
    /// A list with no entry.
    #[error("lists no value")]
    Empty,
    /// Not JSON of the documented shape (the parser's complaint; settings read as JSON are
    /// never secrets).
    #[error("is not JSON of the expected shape: {0}")]
    NotJson(String),
    /// A secret shorter than required (after trimming).
    #[error("is shorter than {min} bytes")]
    TooShort {
        /// Minimum length in bytes.
        min: usize,
    },
    /// Larger than the setting named, which bounds it.
    #[error("is larger than {0}")]
    LargerThan(&'static str),
    /// A fact of the program's own.
    #[error(transparent)]
    Invalid(D),
}

/// One thing wrong with one setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem<D = Infallible> {
    /// The var or secret.
    pub name: String,
    /// The value as given, for a refused scalar that is not a secret.
    pub value: Option<String>,
    /// What is wrong with it.
    pub issue: ConfigIssue<D>,
}

/// `NAME is not set`, `NAME="0" is not from 1 to 100`; a program's own fact after a colon:
/// `GEO_REGIONS: region mars-1 is not a known AWS region, …`.
impl<D: fmt::Display> fmt::Display for ConfigProblem<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(value) = &self.value {
            write!(f, "={value:?}")?;
        }
        match &self.issue {
            ConfigIssue::Invalid(fact) => write!(f, ": {fact}"),
            generic => write!(f, " {generic}"),
        }
    }
}

/// Every problem of a configuration, in the order found, so an operator fixes them in one go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError<D = Infallible> {
    /// Each problem.
    pub problems: Vec<ConfigProblem<D>>,
}

impl<D: fmt::Display> fmt::Display for ConfigError<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} configuration problem(s): ", self.problems.len())?;
        for (index, problem) in self.problems.iter().enumerate() {
            if index > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl<D: fmt::Debug + fmt::Display> std::error::Error for ConfigError<D> {}

/// Reads named values through a lookup (`std::env::var` on the origin, a Worker's vars and
/// secrets, a `HashMap` in tests), collecting every problem.
pub struct Reader<'a, D = Infallible> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    problems: Vec<ConfigProblem<D>>,
}

impl<'a, D> Reader<'a, D> {
    /// A reader with no problem yet.
    pub fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self {
            lookup,
            problems: Vec::new(),
        }
    }

    /// Records a problem found by the program's own parsing.
    pub fn problem(&mut self, name: &str, issue: ConfigIssue<D>) {
        self.problems.push(ConfigProblem {
            name: name.to_owned(),
            value: None,
            issue,
        });
    }

    /// Records a problem with the value that caused it (never a secret).
    fn refused(&mut self, name: &str, value: &str, issue: ConfigIssue<D>) {
        self.problems.push(ConfigProblem {
            name: name.to_owned(),
            value: Some(value.to_owned()),
            issue,
        });
    }

    /// `Ok` when nothing was wrong, else every problem found.
    pub fn finish(self) -> Result<(), ConfigError<D>> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError {
                problems: self.problems,
            })
        }
    }

    /// Trimmed text; `None` when unset or blank.
    pub fn text(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
            .map(|value| value.trim().to_owned())
            .filter(|value| !value.is_empty())
    }

    /// Whether `name` holds anything but whitespace.
    pub fn is_set(&self, name: &str) -> bool {
        self.text(name).is_some()
    }

    /// Text that must be set; empty (with the problem recorded) when it is not.
    pub fn required(&mut self, name: &str) -> String {
        self.text(name).unwrap_or_else(|| {
            self.problem(name, ConfigIssue::Missing);
            String::new()
        })
    }

    /// Text that must be set because `needed_by` is configured.
    pub fn required_for(&mut self, name: &str, needed_by: &'static str) -> String {
        self.text(name).unwrap_or_else(|| {
            self.problem(name, ConfigIssue::NeededBy(needed_by));
            String::new()
        })
    }

    /// The text through `parse`; `None` when unset or refused (the refusal is recorded with the
    /// value, so never parse a secret with it).
    pub fn parse<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, ConfigIssue<D>>,
    ) -> Option<T> {
        let text = self.text(name)?;
        match parse(&text) {
            Ok(value) => Some(value),
            Err(issue) => {
                self.refused(name, &text, issue);
                None
            }
        }
    }

    /// A whole number within `range`; `None` when unset or refused.
    pub fn optional_number(&mut self, name: &str, range: RangeInclusive<u64>) -> Option<u64> {
        self.parse(name, |text| whole_number(text, &range))
    }

    /// A whole number within `range`; `default` when unset or refused.
    pub fn number(&mut self, name: &str, range: RangeInclusive<u64>, default: u64) -> u64 {
        self.optional_number(name, range).unwrap_or(default)
    }

    /// Whole seconds within `range`; `default` seconds when unset or refused.
    pub fn seconds(&mut self, name: &str, range: RangeInclusive<u64>, default: u64) -> Duration {
        Duration::from_secs(self.number(name, range, default))
    }

    /// Whole milliseconds within `range`; `default` milliseconds when unset or refused.
    pub fn millis(&mut self, name: &str, range: RangeInclusive<u64>, default: u64) -> Duration {
        Duration::from_millis(self.number(name, range, default))
    }

    /// An `http://` or `https://` URL, as given.
    pub fn url(&mut self, name: &str) -> Option<String> {
        self.parse(name, |text| http_url(text, false))
    }

    /// An http(s) URL that must be set; empty (with the problem recorded) otherwise.
    pub fn required_url(&mut self, name: &str) -> String {
        if !self.is_set(name) {
            self.problem(name, ConfigIssue::Missing);
        }
        self.url(name).unwrap_or_default()
    }

    /// An `https://` URL, or `http://` to a loopback host (a test serving it locally).
    pub fn https_url(&mut self, name: &str) -> Option<String> {
        self.parse(name, |text| http_url(text, true))
    }

    /// A JSON document of type `T`; `None` when unset or not of that shape (a problem quoting
    /// the JSON parser, never the document).
    pub fn json<T: serde::de::DeserializeOwned>(&mut self, name: &str) -> Option<T> {
        let text = self.text(name)?;
        serde_json::from_str(&text)
            .map_err(|error| self.problem(name, ConfigIssue::NotJson(error.to_string())))
            .ok()
    }

    /// Comma-separated items, trimmed, empty ones dropped; `None` when unset. A list that names
    /// nothing (`" , "`) is a problem.
    pub fn list(&mut self, name: &str) -> Option<Vec<String>> {
        let text = self.text(name)?;
        let items: Vec<String> = text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect();
        if items.is_empty() {
            self.problem(name, ConfigIssue::Empty);
        }
        Some(items)
    }

    /// A secret, by the one rule in the module's documentation; `None` when unset or shorter
    /// than `min_len` bytes (then a problem, without the value).
    pub fn secret(&mut self, name: &str, min_len: usize) -> Option<Secret> {
        let secret = (self.lookup)(name).and_then(secret_of)?;
        if secret.len() < min_len {
            self.problem(name, ConfigIssue::TooShort { min: min_len });
            return None;
        }
        Some(secret)
    }

    /// A secret that must be set; empty (with the problem recorded) otherwise.
    pub fn required_secret(&mut self, name: &str, min_len: usize) -> Secret {
        if (self.lookup)(name).and_then(secret_of).is_none() {
            self.problem(name, ConfigIssue::Missing);
        }
        self.secret(name, min_len)
            .unwrap_or_else(|| Secret::new(Vec::new()))
    }
}

/// A stored secret as its key: surrounding ASCII whitespace trimmed; `None` when nothing is
/// left. The one rule every program applies to every secret.
fn secret_of(stored: String) -> Option<Secret> {
    let trimmed = stored.as_bytes().trim_ascii();
    (!trimmed.is_empty()).then(|| Secret::new(trimmed))
}

fn whole_number<D>(text: &str, range: &RangeInclusive<u64>) -> Result<u64, ConfigIssue<D>> {
    let value: u64 = text.parse().map_err(|_| ConfigIssue::NotANumber)?;
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(ConfigIssue::OutOfRange {
            min: *range.start(),
            max: *range.end(),
        })
    }
}

/// Whether `text` is an absolute `http://` or `https://` URL with a host and no whitespace.
pub fn is_http_url(text: &str) -> bool {
    http_url::<Infallible>(text, false).is_ok()
}

/// Checks [`is_http_url`]; with `https_only`, `http://` is accepted only to a loopback host.
fn http_url<D>(text: &str, https_only: bool) -> Result<String, ConfigIssue<D>> {
    let url = public_url::parse(text).map_err(|_| ConfigIssue::NotAUrl)?;
    let https = url.scheme().eq_ignore_ascii_case("https");
    if !(https || url.scheme().eq_ignore_ascii_case("http")) || text.contains(char::is_whitespace) {
        return Err(ConfigIssue::NotAUrl);
    }
    if https_only && !https && !matches!(url.host(), "127.0.0.1" | "localhost" | "[::1]") {
        return Err(ConfigIssue::InsecureUrl);
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Reads with `pairs` as the environment, then hands back the values and every problem.
    fn read<T>(
        pairs: &[(&str, &str)],
        body: impl FnOnce(&mut Reader<'_>) -> T,
    ) -> (T, Vec<String>) {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let lookup = |name: &str| map.get(name).cloned();
        let mut reader = Reader::new(&lookup);
        let value = body(&mut reader);
        let problems = match reader.finish() {
            Ok(()) => Vec::new(),
            Err(error) => error.problems.iter().map(ToString::to_string).collect(),
        };
        (value, problems)
    }

    #[test]
    fn text_is_trimmed_and_blank_is_unset() {
        let (values, problems) = read(&[("A", "  x  "), ("B", " \n")], |r| {
            (r.text("A"), r.text("B"), r.text("C"), r.is_set("B"))
        });
        assert_eq!(values, (Some("x".into()), None, None, false));
        assert!(problems.is_empty());
    }

    #[test]
    fn required_values_name_what_is_missing() {
        let (values, problems) = read(&[("A", "a")], |r| {
            (
                r.required("A"),
                r.required("B"),
                r.required_for("C", "JWT verification"),
            )
        });
        assert_eq!(values, ("a".into(), String::new(), String::new()));
        assert_eq!(
            problems,
            [
                "B is not set",
                "C is not set, and JWT verification needs it"
            ]
        );
    }

    #[test]
    fn numbers_and_durations_keep_their_range_and_default() {
        let pairs = [
            ("N", " 7 "),
            ("LOW", "0"),
            ("WORD", "ten"),
            ("S", "5"),
            ("MS", "250"),
        ];
        let (values, problems) = read(&pairs, |r| {
            (
                r.number("N", 1..=10, 3),
                r.number("LOW", 1..=10, 3),
                r.number("WORD", 1..=10, 3),
                r.number("UNSET", 1..=10, 3),
                r.seconds("S", 1..=60, 20),
                r.millis("MS", 10..=1_000, 100),
            )
        });
        assert_eq!(
            values,
            (
                7,
                3,
                3,
                3,
                Duration::from_secs(5),
                Duration::from_millis(250)
            )
        );
        assert_eq!(
            problems,
            [
                r#"LOW="0" is not from 1 to 10"#,
                r#"WORD="ten" is not a whole number"#
            ]
        );
    }

    #[test]
    fn urls_are_http_or_https_and_https_only_allows_loopback_http() {
        let pairs = [
            ("OK", "http://o"),
            ("FTP", "ftp://x"),
            ("BARE", "localhost:9"),
            ("SPACE", "https://a b.test"),
            ("NOHOST", "https:///x"),
        ];
        let (values, problems) = read(&pairs, |r| {
            [
                r.url("OK"),
                r.url("FTP"),
                r.url("BARE"),
                r.url("SPACE"),
                r.url("NOHOST"),
            ]
        });
        assert_eq!(values, [Some("http://o".into()), None, None, None, None]);
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(
            problems
                .iter()
                .all(|p| p.ends_with(" is not an http(s) URL"))
        );

        for (url, ok) in [
            (
                "https://team.cloudflareaccess.com/cdn-cgi/access/certs",
                true,
            ),
            ("http://127.0.0.1:8123/certs", true),
            ("http://localhost/certs", true),
            ("http://[::1]:9/certs", true),
            ("http://127.0.0.1.evil.example/certs", false),
            ("http://example.com/certs", false),
            ("ftp://example.com/certs", false),
        ] {
            let (value, _) = read(&[("U", url)], |r| r.https_url("U"));
            assert_eq!(value.is_some(), ok, "{url}");
        }
        let (_, problems) = read(&[("U", "http://keys.example.com")], |r| r.https_url("U"));
        assert_eq!(
            problems,
            [r#"U="http://keys.example.com" is not an https URL (http only to a loopback host)"#]
        );
    }

    #[test]
    fn a_required_url_is_missing_or_refused_never_both() {
        let (values, problems) = read(&[("BAD", "ftp://x")], |r| {
            (r.required_url("UNSET"), r.required_url("BAD"))
        });
        assert_eq!(values, (String::new(), String::new()));
        assert_eq!(
            problems,
            ["UNSET is not set", r#"BAD="ftp://x" is not an http(s) URL"#]
        );
    }

    #[test]
    fn lists_are_trimmed_and_empty_items_dropped() {
        let (values, problems) = read(&[("L", " a , ,b,"), ("E", " , ")], |r| {
            (r.list("L"), r.list("E"), r.list("UNSET"))
        });
        assert_eq!(
            values,
            (Some(vec!["a".into(), "b".into()]), Some(Vec::new()), None)
        );
        assert_eq!(problems, ["E lists no value"]);
    }

    #[test]
    fn json_documents_are_parsed_or_the_parser_is_quoted() {
        let (values, problems) = read(&[("J", r#"{"a": 1}"#), ("BAD", "[1]")], |r| {
            (
                r.json::<HashMap<String, u8>>("J"),
                r.json::<HashMap<String, u8>>("BAD"),
            )
        });
        assert_eq!(values.0, Some(HashMap::from([("a".to_owned(), 1)])));
        assert_eq!(values.1, None);
        assert_eq!(
            problems,
            [
                "BAD is not JSON of the expected shape: invalid type: sequence, expected a map at line 1 column 0"
            ]
        );
    }

    #[test]
    fn one_of_states_the_choices() {
        let (value, problems) = read(&[("F", "xml")], |r| {
            r.parse("F", |text| match text {
                "json" | "text" => Ok(text.to_owned()),
                _ => Err(ConfigIssue::NotOneOf(&["json", "text"])),
            })
        });
        assert_eq!(value, None);
        assert_eq!(problems, [r#"F="xml" is not one of json, text"#]);
    }

    #[test]
    fn secrets_are_trimmed_checked_for_length_and_never_shown() {
        let key = "0123456789abcdef0123456789abcdef";
        let newline = format!("{key}\n");
        let spaced = format!(" \t{key}\r\n");
        let pairs = [
            ("PLAIN", key),
            ("NEWLINE", newline.as_str()),
            ("SPACED", spaced.as_str()),
            ("SHORT", "hunter2\n"),
            ("BLANK", " \n"),
        ];
        let (values, problems) = read(&pairs, |r| {
            [
                r.secret("PLAIN", 32),
                r.secret("NEWLINE", 32),
                r.secret("SPACED", 32),
                r.secret("SHORT", 32),
                r.secret("BLANK", 32),
                r.secret("UNSET", 32),
            ]
        });
        let expected = Some(Secret::new(key));
        assert_eq!(values[..3], [expected.clone(), expected.clone(), expected]);
        assert_eq!(values[3..], [None, None, None]);
        assert_eq!(problems, ["SHORT is shorter than 32 bytes"]);

        let (value, problems) = read(&[("INNER", "a b")], |r| {
            (r.required_secret("INNER", 3), r.required_secret("UNSET", 3))
        });
        assert_eq!(
            value,
            (Secret::new("a b"), Secret::new(Vec::new())),
            "inner bytes count"
        );
        assert_eq!(problems, ["UNSET is not set"]);
    }

    #[test]
    fn the_error_reports_every_problem_on_one_line() {
        #[derive(Debug, Clone, PartialEq, thiserror::Error)]
        #[error("region {0} is unknown")]
        struct Unknown(&'static str);

        let lookup = |name: &str| (name == "N").then(|| "x".to_owned());
        let mut reader: Reader<'_, Unknown> = Reader::new(&lookup);
        reader.number("N", 0..=1, 0);
        reader.problem("TABLE", ConfigIssue::Invalid(Unknown("mars-1")));
        let error = reader.finish().expect_err("two problems");
        assert_eq!(
            error.to_string(),
            r#"2 configuration problem(s): N="x" is not a whole number; TABLE: region mars-1 is unknown"#
        );
    }
}
