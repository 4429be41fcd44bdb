//! The project id of a working directory: the repository name from the git remote
//! (`origin`, else the first remote) of the enclosing work tree, else the name of the
//! work tree's top-level folder (of the directory itself outside git), made into a valid
//! project name. The same repository cloned into differently named folders is one project.

use std::path::{Path, PathBuf};

use crate::identity::{validate_project, MAX_PROJECT_LEN};

/// The top of the git work tree holding `dir` (the nearest ancestor with a `.git`).
pub fn git_top(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .find(|d| d.join(".git").exists())
        .map(Path::to_path_buf)
}

/// The project id for `dir` (see the module docs); `None` when no valid name can be made.
pub fn derive(dir: &Path) -> Option<String> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let top = git_top(&dir);
    let from_remote = top
        .as_deref()
        .and_then(git_config)
        .and_then(|cfg| remote_url(&cfg))
        .and_then(|url| repo_name(&url));
    let folder = || {
        top.as_deref()
            .unwrap_or(&dir)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
    };
    from_remote
        .or_else(folder)
        .map(|n| sanitize(&n))
        .filter(|n| validate_project(n).is_ok())
}

/// The text of the work tree's git config (`.git/config`, or through a `gitdir:` file).
fn git_config(top: &Path) -> Option<String> {
    let dot_git = top.join(".git");
    let git_dir = if dot_git.is_dir() {
        dot_git
    } else {
        let text = std::fs::read_to_string(&dot_git).ok()?;
        let target = text.trim().strip_prefix("gitdir:")?.trim();
        let dir = top.join(target);
        // A worktree's git dir keeps its config in the common dir.
        match std::fs::read_to_string(dir.join("commondir")) {
            Ok(common) => dir.join(common.trim()),
            Err(_) => dir,
        }
    };
    std::fs::read_to_string(git_dir.join("config")).ok()
}

/// The URL of remote `origin`, else of the first remote, in a git config text.
pub fn remote_url(config: &str) -> Option<String> {
    let mut section: Option<String> = None;
    let mut first = None;
    for line in config.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line
                .strip_prefix("[remote \"")
                .and_then(|r| r.strip_suffix("\"]"))
                .map(str::to_string);
            continue;
        }
        let Some(remote) = &section else { continue };
        if let Some((k, v)) = line.split_once('=') {
            if k.trim() == "url" {
                let url = v.trim().to_string();
                if remote == "origin" {
                    return Some(url);
                }
                first.get_or_insert(url);
            }
        }
    }
    first
}

/// The repository name of a remote URL (`https://host/org/repo.git`, `git@host:org/repo`).
pub fn repo_name(url: &str) -> Option<String> {
    let path = url.trim_end_matches('/');
    let last = path.rsplit(['/', ':', '\\']).next()?;
    let name = last.strip_suffix(".git").unwrap_or(last);
    (!name.is_empty()).then(|| name.to_string())
}

/// Lowercase, every run of other characters than `[a-z0-9._-]` as one `-`, no leading
/// dots or dashes, at most [`MAX_PROJECT_LEN`] characters.
pub fn sanitize(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_start_matches(['.', '-']).trim_end_matches('-');
    out.chars().take(MAX_PROJECT_LEN).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_urls_and_names() {
        let cfg = "[core]\n\tbare = false\n[remote \"upstream\"]\n\turl = https://x/y/other.git\n[remote \"origin\"]\n\turl = git@github.com:Acme/Web-App.git\n\tfetch = +refs/heads/*\n";
        assert_eq!(remote_url(cfg).unwrap(), "git@github.com:Acme/Web-App.git");
        assert_eq!(
            remote_url("[remote \"a\"]\nurl = https://h/o/r\n").unwrap(),
            "https://h/o/r"
        );
        assert_eq!(remote_url("[core]\n"), None);
        assert_eq!(
            repo_name("git@github.com:Acme/Web-App.git").unwrap(),
            "Web-App"
        );
        assert_eq!(repo_name("https://h/o/r/").unwrap(), "r");
        assert_eq!(repo_name("git@h:repo").unwrap(), "repo");
        assert_eq!(sanitize("Web App (copy)"), "web-app-copy");
        assert_eq!(sanitize(".hidden"), "hidden");
        assert_eq!(sanitize("ünï"), "n");
    }

    #[test]
    fn derives_from_the_remote_else_the_top_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().join("My Checkout");
        std::fs::create_dir_all(top.join(".git")).unwrap();
        std::fs::create_dir_all(top.join("src/deep")).unwrap();
        assert_eq!(derive(&top.join("src/deep")).unwrap(), "my-checkout");
        std::fs::write(
            top.join(".git/config"),
            "[remote \"origin\"]\n\turl = https://github.com/acme/payments.git\n",
        )
        .unwrap();
        assert_eq!(derive(&top.join("src")).unwrap(), "payments");
        let plain = tmp.path().join("notes");
        std::fs::create_dir_all(&plain).unwrap();
        assert_eq!(derive(&plain).unwrap(), "notes");
    }
}
