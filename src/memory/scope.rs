//! Memory scopes: a user's project-independent memory, or one project of a user.
//!
//! A request names its project by the `x-memory-project` header, by the base-URL prefix
//! `/p/<project>/…`, or through `memproxy intercept` (which sends the header); a virtual
//! key may be bound to a project. Stores know nothing of projects: a project scope is
//! stored under the key `user#project` wherever a store takes a `user_id`, and the
//! user's own scope under the plain user id. `#` cannot occur in a user id
//! ([`crate::identity::validate_user_id`]) nor in a project name ([`validate_project`]),
//! so the keys of two scopes never meet and store-level isolation holds as it is.

use axum::http::{HeaderMap, HeaderName};

/// The header naming a request's project.
pub const PROJECT_HEADER: HeaderName = HeaderName::from_static("x-memory-project");

/// Longest accepted project name.
pub const MAX_PROJECT_LEN: usize = 64;

/// Joins a user id and a project name in a store key.
pub const SEPARATOR: char = '#';

/// A project name that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScopeError {
    #[error("invalid project name {0:?}: use 1 to {MAX_PROJECT_LEN} characters of letters, digits and . _ -")]
    BadName(String),
    #[error("header x-memory-project is not valid text")]
    BadHeader,
}

/// Checks a project name: 1 to 64 characters of `[A-Za-z0-9._-]`, not `.` or `..`.
pub fn validate_project(name: &str) -> Result<(), ScopeError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_PROJECT_LEN
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ScopeError::BadName(name.chars().take(80).collect()))
    }
}

/// The project named by the `x-memory-project` header, validated; `None` when absent.
pub fn header_project(headers: &HeaderMap) -> Result<Option<String>, ScopeError> {
    let Some(v) = headers.get(&PROJECT_HEADER) else {
        return Ok(None);
    };
    let name = v.to_str().map_err(|_| ScopeError::BadHeader)?.trim();
    validate_project(name)?;
    Ok(Some(name.to_string()))
}

/// Splits `/p/<project>/rest` into the project and `/rest` (the path every client uses
/// without a prefix). `None` when the path has no project prefix. The name is returned
/// unvalidated.
pub fn split_prefix(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/p/")?;
    match rest.find('/') {
        Some(i) => Some((&rest[..i], &rest[i..])),
        None => Some((rest, "/")),
    }
}

/// One memory scope: a user, and optionally one of their projects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub user_id: String,
    pub project: Option<String>,
}

impl Scope {
    /// The store key of this scope (`user#project`, or the user id).
    pub fn key(&self) -> String {
        match &self.project {
            Some(p) => format!("{}{SEPARATOR}{p}", self.user_id),
            None => self.user_id.clone(),
        }
    }

    /// The store key of the user's project-independent scope.
    pub fn user_key(&self) -> &str {
        &self.user_id
    }
}

/// The store-key prefix shared by every project scope of `user_id`.
pub fn project_prefix(user_id: &str) -> String {
    format!("{user_id}{SEPARATOR}")
}

/// The user id and project of a store key (inverse of [`Scope::key`]).
pub fn parse_key(key: &str) -> (&str, Option<&str>) {
    match key.split_once(SEPARATOR) {
        Some((u, p)) => (u, Some(p)),
        None => (key, None),
    }
}

/// Where retrieval looks when a request has a project
/// (`context_retrieval.project_scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProjectScope {
    /// The project's memories first, then the user's project-independent ones.
    #[default]
    ProjectThenUser,
    /// The project's memories only.
    ProjectOnly,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "my-repo", "My_Repo.v2", &"x".repeat(64)] {
            assert!(validate_project(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a b", "a#b", "a/b", "ü", &"x".repeat(65)] {
            assert!(validate_project(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn prefix_and_keys() {
        assert_eq!(
            split_prefix("/p/web/v1/messages"),
            Some(("web", "/v1/messages"))
        );
        assert_eq!(split_prefix("/p/web"), Some(("web", "/")));
        assert_eq!(split_prefix("/v1/p/web"), None);
        let s = Scope {
            user_id: "alice".into(),
            project: Some("web".into()),
        };
        assert_eq!(s.key(), "alice#web");
        assert_eq!(parse_key(&s.key()), ("alice", Some("web")));
        assert_eq!(parse_key("alice"), ("alice", None));
        assert!(s.key().starts_with(&project_prefix("alice")));
    }
}
