//! Client detection: which `user_id` (memory scope) a request belongs to, decided from a
//! key binding, a custom header, user-agent style patterns, or the default (SPEC §3); and
//! which client program sent it ([`client_name`], the usage row's `client`).

use std::borrow::Cow;

use axum::http::{header, HeaderMap, HeaderName};
use regex::Regex;
use serde::Serialize;

/// Longest accepted user id.
pub const MAX_USER_ID_LEN: usize = 128;

/// How user ids are derived from request headers.
#[derive(Debug, Serialize)]
pub struct IdentityConfig {
    /// Header that names the user id directly; highest priority after a key binding.
    #[serde(serialize_with = "ser_header")]
    pub custom_header: HeaderName,
    /// Tried in order; the first whose header matches wins.
    pub patterns: Vec<HeaderPattern>,
    /// Used when nothing else matches.
    pub default_user_id: String,
}

/// One `header_patterns` rule: a case-insensitive regex over one header.
#[derive(Debug, Serialize)]
pub struct HeaderPattern {
    #[serde(serialize_with = "ser_header")]
    pub header: HeaderName,
    #[serde(serialize_with = "ser_regex")]
    pub regex: Regex,
    pub user_id: String,
}

fn ser_header<S: serde::Serializer>(h: &HeaderName, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(h.as_str())
}

fn ser_regex<S: serde::Serializer>(r: &Regex, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(r.as_str())
}

/// A user id that cannot be used as a memory scope.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("user id must not be empty")]
    Empty,
    #[error("user id is longer than {MAX_USER_ID_LEN} characters")]
    TooLong,
    #[error("user id may only contain letters, digits and . _ - : @ (got {0:?})")]
    BadCharset(String),
    #[error("header {0} is not valid UTF-8 text")]
    BadHeader(String),
}

/// Checks a user id: 1 to 128 characters of `[A-Za-z0-9._:@-]`.
pub fn validate_user_id(id: &str) -> Result<(), IdentityError> {
    if id.is_empty() {
        return Err(IdentityError::Empty);
    }
    if id.len() > MAX_USER_ID_LEN {
        return Err(IdentityError::TooLong);
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'@'))
    {
        let shown: String = id.chars().take(40).collect();
        return Err(IdentityError::BadCharset(shown));
    }
    Ok(())
}

/// Which rule decided the user id.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MatchedRule {
    /// The API key is bound to this user scope; headers cannot override it.
    KeyBinding,
    /// The configured custom header named the user id.
    CustomHeader,
    /// `header_patterns[index]` matched.
    HeaderPattern {
        index: usize,
    },
    Default,
}

/// The outcome of client detection for one request.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub user_id: String,
    pub rule: MatchedRule,
}

impl IdentityConfig {
    /// Decides the user id: key binding → custom header → patterns → default.
    pub fn detect(
        &self,
        headers: &HeaderMap,
        key_scope: Option<&str>,
    ) -> Result<Decision, IdentityError> {
        if let Some(scope) = key_scope {
            return Ok(Decision {
                user_id: scope.to_string(),
                rule: MatchedRule::KeyBinding,
            });
        }
        if let Some(v) = headers.get(&self.custom_header) {
            let id = v
                .to_str()
                .map_err(|_| IdentityError::BadHeader(self.custom_header.to_string()))?
                .trim();
            validate_user_id(id)?;
            return Ok(Decision {
                user_id: id.to_string(),
                rule: MatchedRule::CustomHeader,
            });
        }
        for (index, p) in self.patterns.iter().enumerate() {
            for value in headers.get_all(&p.header) {
                // Non-UTF-8 bytes cannot match a text pattern; they are skipped, not fatal.
                if let Ok(text) = value.to_str() {
                    if p.regex.is_match(text) {
                        return Ok(Decision {
                            user_id: p.user_id.clone(),
                            rule: MatchedRule::HeaderPattern { index },
                        });
                    }
                }
            }
        }
        Ok(Decision {
            user_id: self.default_user_id.clone(),
            rule: MatchedRule::Default,
        })
    }
}

/// Known clients by a fragment of their `User-Agent` (ASCII case ignored), first match
/// wins: Claude Code's own token comes before the SDK it is built on.
const KNOWN_CLIENTS: &[(&str, &str)] = &[
    ("claude-cli/", "claude-code"),
    ("codex_exec/", "codex"),
    ("codex_cli_rs/", "codex"),
    ("OpenAIClientImpl/Java", "pycharm-ai"),
    ("OpenAI/Python", "openai-python"),
    ("OpenAI/JS", "openai-node"),
    ("Anthropic/Python", "anthropic-python"),
    ("Anthropic/JS", "anthropic-node"),
];

/// Longest product token kept for an unknown client.
const MAX_CLIENT_LEN: usize = 64;

/// The client program that sent a request, for the usage row: a name from
/// [`KNOWN_CLIENTS`], else the user agent's product token (`curl/8.5` → `curl`), else
/// `unknown`. Independent of the user id, which the configuration decides.
pub fn client_name(headers: &HeaderMap) -> Cow<'static, str> {
    let Some(ua) = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
    else {
        return Cow::Borrowed("unknown");
    };
    let bytes = ua.as_bytes();
    for (fragment, name) in KNOWN_CLIENTS {
        let f = fragment.as_bytes();
        if bytes.windows(f.len()).any(|w| w.eq_ignore_ascii_case(f)) {
            return Cow::Borrowed(name);
        }
    }
    let token: String = ua
        .trim()
        .split(|c: char| c == '/' || c.is_whitespace())
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(MAX_CLIENT_LEN)
        .collect();
    if token.is_empty() {
        Cow::Borrowed("unknown")
    } else {
        Cow::Owned(token.to_ascii_lowercase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::RegexBuilder;

    fn cfg() -> IdentityConfig {
        let pat = |h: &str, p: &str, u: &str| HeaderPattern {
            header: HeaderName::from_bytes(h.as_bytes()).unwrap(),
            regex: RegexBuilder::new(p).case_insensitive(true).build().unwrap(),
            user_id: u.into(),
        };
        IdentityConfig {
            custom_header: HeaderName::from_static("x-memory-user-id"),
            patterns: vec![
                pat("user-agent", "OpenAIClientImpl/Java", "pycharm-ai"),
                pat("user-agent", "^Claude Code|claude-cli", "claude-code"),
                pat("x-client", "claude", "second-rule"),
            ],
            default_user_id: "default-dev".into(),
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn priority_key_then_header_then_pattern_then_default() {
        let c = cfg();
        let h = headers(&[
            ("x-memory-user-id", "alice"),
            ("user-agent", "claude-cli/2.1"),
        ]);
        assert_eq!(c.detect(&h, Some("bound")).unwrap().user_id, "bound");
        assert_eq!(c.detect(&h, None).unwrap().user_id, "alice");
        let h = headers(&[
            ("user-agent", "claude-cli/2.1 (external, sdk-cli)"),
            ("x-client", "claude"),
        ]);
        let d = c.detect(&h, None).unwrap();
        assert_eq!(d.user_id, "claude-code");
        assert!(matches!(d.rule, MatchedRule::HeaderPattern { index: 1 }));
        assert_eq!(
            c.detect(&headers(&[]), None).unwrap().rule,
            MatchedRule::Default
        );
    }

    #[test]
    fn patterns_are_case_insensitive() {
        let h = headers(&[("user-agent", "openaiclientimpl/java 1.2")]);
        assert_eq!(cfg().detect(&h, None).unwrap().user_id, "pycharm-ai");
    }

    #[test]
    fn bad_custom_header_is_an_error_not_a_fallback() {
        let c = cfg();
        for bad in ["a b", "../etc", "x".repeat(129).as_str(), ""] {
            let h = headers(&[("x-memory-user-id", bad)]);
            assert!(c.detect(&h, None).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn validates_charset() {
        assert!(validate_user_id("team:alice@example.com").is_ok());
        assert!(validate_user_id("ünïcode").is_err());
    }

    #[test]
    fn client_names_from_user_agents() {
        let name = |ua: &str| client_name(&headers(&[("user-agent", ua)])).into_owned();
        for (ua, expected) in [
            ("claude-cli/2.1.332 (external, sdk-cli)", "claude-code"),
            ("codex_exec/0.171.0 (Debian 13; x86_64) xterm", "codex"),
            ("codex_cli_rs/0.171.0 (Mac OS 15.5; arm64)", "codex"),
            ("OpenAI/Python 3.63.0", "openai-python"),
            ("OpenAI/JS 7.60.0", "openai-node"),
            ("Anthropic/Python 2.17.0", "anthropic-python"),
            ("Anthropic/JS 1.17.0", "anthropic-node"),
            ("OpenAIClientImpl/Java unknown", "pycharm-ai"),
            ("openai/python 1.0", "openai-python"),
            ("curl/8.5.0", "curl"),
            ("Mozilla/5.0 (X11; Linux x86_64)", "mozilla"),
            ("python-httpx/0.28.1", "python-httpx"),
            ("  ", "unknown"),
            ("(+)", "unknown"),
        ] {
            assert_eq!(name(ua), expected, "{ua}");
        }
        assert_eq!(client_name(&headers(&[])), "unknown");
        assert!(name(&"x".repeat(500)).len() <= MAX_CLIENT_LEN);
    }
}
