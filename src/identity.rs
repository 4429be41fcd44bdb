//! Client detection: which `user_id` (memory scope) a request belongs to, decided from a
//! key binding, a custom header, user-agent style patterns, or the default (SPEC §3); and
//! which project, if any, from a key binding, the `/p/<project>/` URL prefix or the
//! `x-memory-project` header (SPEC §4).

use axum::http::{HeaderMap, HeaderName};
use regex::Regex;
use serde::Serialize;

/// Longest accepted user id.
pub const MAX_USER_ID_LEN: usize = 128;

/// Longest accepted project name.
pub const MAX_PROJECT_LEN: usize = 64;

/// The header that names a request's project (the edge interceptor sets it).
pub const PROJECT_HEADER: &str = "x-memory-project";

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
    #[error(
        "project name must be 1 to {MAX_PROJECT_LEN} characters of letters, digits and . _ - \
         and must not start with a dot (got {0:?})"
    )]
    BadProject(String),
    #[error("the URL names project `{path}` but the x-memory-project header names `{header}`")]
    ConflictingProject { path: String, header: String },
}

impl IdentityError {
    /// True for errors about the project, not the user id.
    pub fn is_project(&self) -> bool {
        matches!(
            self,
            IdentityError::BadProject(_) | IdentityError::ConflictingProject { .. }
        )
    }
}

/// Checks a project name: 1 to 64 characters of `[A-Za-z0-9._-]`, not starting with a dot
/// (it is a URL path segment, where `.` and `..` mean something else).
pub fn validate_project(name: &str) -> Result<(), IdentityError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_PROJECT_LEN
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(IdentityError::BadProject(name.chars().take(40).collect()))
    }
}

/// Which rule decided the project.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ProjectRule {
    /// The API key is bound to this project; the URL and headers cannot override it.
    KeyBinding,
    /// The `/p/<project>/` prefix of the URL.
    Path,
    /// The `x-memory-project` header.
    Header,
}

/// The project of a request: the key's binding wins; else the URL prefix and the header,
/// which must agree when both are present. `None`: the request has no project (user-level
/// memory only).
pub fn detect_project(
    headers: &HeaderMap,
    path_project: Option<&str>,
    key_project: Option<&str>,
) -> Result<Option<(String, ProjectRule)>, IdentityError> {
    if let Some(p) = key_project {
        return Ok(Some((p.to_string(), ProjectRule::KeyBinding)));
    }
    let header = match headers.get(PROJECT_HEADER) {
        None => None,
        Some(v) => {
            let p = v
                .to_str()
                .map_err(|_| IdentityError::BadHeader(PROJECT_HEADER.into()))?
                .trim();
            // An empty header is no project (a client template with the value left out).
            (!p.is_empty()).then_some(p)
        }
    };
    match (path_project, header) {
        (Some(path), Some(header)) if path != header => Err(IdentityError::ConflictingProject {
            path: path.chars().take(40).collect(),
            header: header.chars().take(40).collect(),
        }),
        (Some(p), _) => validate_project(p).map(|()| Some((p.to_string(), ProjectRule::Path))),
        (None, Some(p)) => validate_project(p).map(|()| Some((p.to_string(), ProjectRule::Header))),
        (None, None) => Ok(None),
    }
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
    /// The project whose memory the request uses first ([`detect_project`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_rule: Option<ProjectRule>,
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
                project: None,
                project_rule: None,
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
                project: None,
                project_rule: None,
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
                            project: None,
                            project_rule: None,
                        });
                    }
                }
            }
        }
        Ok(Decision {
            user_id: self.default_user_id.clone(),
            rule: MatchedRule::Default,
            project: None,
            project_rule: None,
        })
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
    fn projects_from_key_path_or_header() {
        let none = headers(&[]);
        let hdr = headers(&[("x-memory-project", "web-app")]);
        assert_eq!(detect_project(&none, None, None).unwrap(), None);
        assert_eq!(
            detect_project(&hdr, None, None).unwrap(),
            Some(("web-app".into(), ProjectRule::Header))
        );
        assert_eq!(
            detect_project(&none, Some("api"), None).unwrap(),
            Some(("api".into(), ProjectRule::Path))
        );
        // The same project twice is fine; two different ones are refused.
        assert!(detect_project(&hdr, Some("web-app"), None).is_ok());
        assert!(matches!(
            detect_project(&hdr, Some("api"), None),
            Err(IdentityError::ConflictingProject { .. })
        ));
        // A key's binding wins over both.
        assert_eq!(
            detect_project(&hdr, Some("api"), Some("bound")).unwrap(),
            Some(("bound".into(), ProjectRule::KeyBinding))
        );
        assert_eq!(
            detect_project(&headers(&[("x-memory-project", " ")]), None, None).unwrap(),
            None
        );
    }

    #[test]
    fn project_names_are_validated() {
        for good in ["a", "web-app", "My_Repo.v2", &"x".repeat(64)] {
            assert!(validate_project(good).is_ok(), "{good:?}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a b",
            "a/b",
            "a#b",
            "ü",
            &"x".repeat(65),
        ] {
            assert!(validate_project(bad).is_err(), "{bad:?}");
        }
        let h = headers(&[("x-memory-project", "a/b")]);
        assert!(matches!(
            detect_project(&h, None, None),
            Err(IdentityError::BadProject(_))
        ));
    }

    #[test]
    fn validates_charset() {
        assert!(validate_user_id("team:alice@example.com").is_ok());
        assert!(validate_user_id("ünïcode").is_err());
    }
}
