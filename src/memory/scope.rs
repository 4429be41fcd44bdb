//! Memory scopes (SPEC §4): whose memory a call reads or writes, a user id and optionally
//! a project, and the one string key that the store is addressed with (the `user_id` of
//! every [`MemoryStore`](super::MemoryStore) call).
//!
//! A user's project-independent memory has the key `user`; a project's has
//! `user` + [`SEP`] + `project`. Neither user ids nor project names can contain [`SEP`],
//! so a key names exactly one scope, and a scope's key can never be another's (user
//! `a#b` cannot exist). Only this module builds or splits keys.

use serde::Serialize;

use crate::config::ProjectScope;
use crate::identity::{validate_project, validate_user_id, IdentityError};

/// Separates the user from the project in a scope key.
pub const SEP: char = '#';

/// A validated memory scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    key: String,
    /// Byte offset of [`SEP`] in `key`, when the scope is a project's.
    split: Option<usize>,
}

impl Scope {
    /// The scope of `user_id` and, when given, its `project`; both validated.
    pub fn new(user_id: &str, project: Option<&str>) -> Result<Self, IdentityError> {
        validate_user_id(user_id)?;
        match project {
            None => Ok(Self {
                key: user_id.to_string(),
                split: None,
            }),
            Some(p) => {
                validate_project(p)?;
                Ok(Self {
                    key: format!("{user_id}{SEP}{p}"),
                    split: Some(user_id.len()),
                })
            }
        }
    }

    /// A user's project-independent scope.
    pub fn user(user_id: &str) -> Result<Self, IdentityError> {
        Self::new(user_id, None)
    }

    /// The scope a store key names (as found in stored records).
    pub fn parse(key: &str) -> Result<Self, IdentityError> {
        match key.split_once(SEP) {
            None => Self::new(key, None),
            Some((user, project)) => Self::new(user, Some(project)),
        }
    }

    /// The key the store is addressed with.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The user id.
    pub fn user_id(&self) -> &str {
        match self.split {
            Some(i) => &self.key[..i],
            None => &self.key,
        }
    }

    /// The project, for a project's scope.
    pub fn project(&self) -> Option<&str> {
        self.split.map(|i| &self.key[i + SEP.len_utf8()..])
    }

    /// The user's project-independent scope (itself when it is one).
    pub fn user_scope(&self) -> Scope {
        Scope {
            key: self.user_id().to_string(),
            split: None,
        }
    }

    /// The prefix shared by the keys of every project scope of `user_id` (for listing
    /// them; the user's own key is not among them).
    pub fn projects_prefix(user_id: &str) -> String {
        format!("{user_id}{SEP}")
    }

    /// The scope as the APIs show it: `{"user_id", "project"?}`.
    pub fn label(&self) -> ScopeLabel<'_> {
        ScopeLabel {
            user_id: self.user_id(),
            project: self.project(),
        }
    }
}

/// A scope as the APIs show it.
#[derive(Debug, Serialize)]
pub struct ScopeLabel<'a> {
    pub user_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project: Option<&'a str>,
}

impl Scope {
    /// The scopes a request of this scope reads, in order: its own, then (for a project,
    /// with `project_then_user`) the user's.
    pub fn readable(&self, mode: ProjectScope) -> Vec<Scope> {
        let scope = self;
        match (scope.project(), mode) {
            (Some(_), ProjectScope::ProjectThenUser) => vec![scope.clone(), scope.user_scope()],
            _ => vec![scope.clone()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let u = Scope::user("alice@example.com").unwrap();
        assert_eq!(u.key(), "alice@example.com");
        assert_eq!((u.user_id(), u.project()), ("alice@example.com", None));
        let p = Scope::new("alice", Some("web-app")).unwrap();
        assert_eq!(p.key(), "alice#web-app");
        assert_eq!((p.user_id(), p.project()), ("alice", Some("web-app")));
        assert_eq!(Scope::parse(p.key()).unwrap(), p);
        assert_eq!(Scope::parse(u.key()).unwrap(), u);
        assert_eq!(p.user_scope(), Scope::user("alice").unwrap());
        assert!(p.key().starts_with(&Scope::projects_prefix("alice")));
        assert!(!u.key().starts_with(&Scope::projects_prefix("alice")));
    }

    #[test]
    fn bad_parts_and_keys_are_refused() {
        assert!(Scope::new("a#b", None).is_err());
        assert!(Scope::new("alice", Some("x#y")).is_err());
        assert!(Scope::new("alice", Some("")).is_err());
        assert!(Scope::new("", Some("p")).is_err());
        assert!(Scope::parse("alice#").is_err());
        assert!(Scope::parse("alice#p#q").is_err());
        assert!(Scope::parse("#p").is_err());
    }

    #[test]
    fn one_user_cannot_reach_another_through_a_project_name() {
        // `ali` + project `ce` must not be user `alice`, nor `alice`'s projects.
        let a = Scope::new("ali", Some("ce")).unwrap();
        assert_ne!(a.key(), "alice");
        assert!(!a.key().starts_with(&Scope::projects_prefix("alice")));
    }

    #[test]
    fn readable_scopes() {
        let p = Scope::new("u", Some("p")).unwrap();
        let keys = |v: Vec<Scope>| v.iter().map(|s| s.key().to_string()).collect::<Vec<_>>();
        assert_eq!(
            keys(p.readable(ProjectScope::ProjectThenUser)),
            ["u#p", "u"]
        );
        assert_eq!(keys(p.readable(ProjectScope::ProjectOnly)), ["u#p"]);
        let u = p.user_scope();
        assert_eq!(keys(u.readable(ProjectScope::ProjectThenUser)), ["u"]);
    }
}
