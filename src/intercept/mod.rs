//! `memproxy intercept`: a small local proxy per project, in front of a central memproxy.
//! IDEs and agents point at it as at any OpenAI- or Anthropic-compatible endpoint; it
//! forwards everything unchanged and streamed ([`proxy`]), adding the project header
//! (`x-memory-project`) and, when given, the user id and the memproxy key, so that every
//! request of the project lands in the project's memory scope.
//!
//! The project is named on the command line, or derived from a directory
//! ([`project_from_dir`]: the git remote `origin`'s repository name, else the top-level
//! folder's name). Its port comes from the [`registry`]: the same project gets the same
//! port on every start.

pub mod cli;
pub mod proxy;
pub mod registry;

use std::future::Future;
use std::path::{Path, PathBuf};

pub use proxy::{app, Target, TargetError};
pub use registry::{Registry, RegistryError};

use crate::memory::scope::{validate_project, MAX_PROJECT_LEN};

/// Serves the interceptor on `listener` until `shutdown` resolves (in-flight streams are
/// let finish).
pub async fn serve(
    listener: tokio::net::TcpListener,
    target: Target,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(target)?)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Why no project name could be derived.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error("cannot read directory {0}: {1}")]
    Dir(String, std::io::Error),
    #[error("cannot derive a project name from {0}; pass --project NAME")]
    NoName(String),
}

/// The project of a directory: the repository name of its git remote `origin`, else the
/// name of its top-level folder (the git work tree's root, or the directory itself), made
/// a valid project name (other characters become `-`, at most 64 kept).
pub fn project_from_dir(dir: &Path) -> Result<String, ProjectError> {
    let dir = dir
        .canonicalize()
        .map_err(|e| ProjectError::Dir(dir.display().to_string(), e))?;
    let root = dir.ancestors().find(|d| d.join(".git").exists());
    let from_remote = root
        .and_then(git_dir)
        .and_then(|g| std::fs::read_to_string(g.join("config")).ok())
        .and_then(|config| origin_url(&config))
        .and_then(|url| repo_name(&url));
    let name = from_remote.or_else(|| {
        root.unwrap_or(&dir)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
    });
    name.map(|n| sanitize(&n))
        .filter(|n| validate_project(n).is_ok())
        .ok_or_else(|| ProjectError::NoName(dir.display().to_string()))
}

/// The git directory holding the config of the work tree at `root` (`.git`, or for a
/// linked work tree the main repository's, through `gitdir:` and `commondir`).
fn git_dir(root: &Path) -> Option<PathBuf> {
    let dot = root.join(".git");
    if dot.is_dir() {
        return Some(dot);
    }
    let text = std::fs::read_to_string(&dot).ok()?;
    let linked = root.join(text.strip_prefix("gitdir:")?.trim());
    match std::fs::read_to_string(linked.join("commondir")) {
        Ok(common) => Some(linked.join(common.trim())),
        Err(_) => Some(linked),
    }
}

/// The `url` of `[remote "origin"]` in a git config file.
fn origin_url(config: &str) -> Option<String> {
    let mut in_origin = false;
    for line in config.lines().map(str::trim) {
        if line.starts_with('[') {
            in_origin = line.replace(' ', "") == "[remote\"origin\"]";
        } else if in_origin {
            if let Some((k, v)) = line.split_once('=') {
                if k.trim() == "url" {
                    return Some(v.trim().trim_matches('"').to_string());
                }
            }
        }
    }
    None
}

/// `git@github.com:me/web-app.git` or `https://host/me/web-app/` → `web-app`.
fn repo_name(url: &str) -> Option<String> {
    let url = url.trim_end_matches('/');
    let url = url.strip_suffix(".git").unwrap_or(url);
    let name = url.rsplit(['/', ':', '\\']).next()?;
    (!name.is_empty()).then(|| name.to_string())
}

fn sanitize(name: &str) -> String {
    let mapped: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(MAX_PROJECT_LEN)
        .collect();
    mapped.trim_matches('-').to_string()
}

/// What to paste where, for an interceptor listening at `base` (`http://127.0.0.1:PORT`).
pub fn setup_text(base: &str, project: &str) -> String {
    format!(
        "Point your tools at this interceptor (project `{project}`):\n\
         \x20 PyCharm AI Assistant (OpenAI-compatible provider URL): {base}/v1\n\
         \x20 Claude Code:  export ANTHROPIC_BASE_URL={base}\n\
         \x20 Codex:        export OPENAI_BASE_URL={base}/v1\n\
         \x20 any OpenAI SDK: base_url={base}/v1   any Anthropic SDK: base_url={base}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_git_remotes_and_folders() {
        assert_eq!(
            repo_name("git@github.com:me/web-app.git").unwrap(),
            "web-app"
        );
        assert_eq!(repo_name("https://host/me/api/").unwrap(), "api");
        let cfg = "[core]\n\turl = no\n[remote \"upstream\"]\n\turl = x/other\n[remote \"origin\"]\n\tfetch = +refs\n\turl = https://h/me/shop.git\n";
        assert_eq!(origin_url(cfg).unwrap(), "https://h/me/shop.git");
        assert_eq!(sanitize("My Project (2)"), "My-Project--2");

        let tmp = tempfile::tempdir().unwrap();
        let plain = tmp.path().join("plain dir");
        std::fs::create_dir_all(plain.join("src")).unwrap();
        assert_eq!(project_from_dir(&plain.join("src")).unwrap(), "src");
        assert_eq!(project_from_dir(&plain).unwrap(), "plain-dir");
        let repo = tmp.path().join("checkout");
        std::fs::create_dir_all(repo.join(".git")).unwrap();
        std::fs::create_dir_all(repo.join("a/b")).unwrap();
        assert_eq!(project_from_dir(&repo.join("a/b")).unwrap(), "checkout");
        std::fs::write(repo.join(".git/config"), cfg).unwrap();
        assert_eq!(project_from_dir(&repo.join("a/b")).unwrap(), "shop");
    }
}
