//! `*` wildcards in model names, one rule for every list that takes them (`model_list`
//! names, a key's `models`, `enabled_for_models`): `*` stands for any run of characters,
//! anything else for itself.

/// Whether `name` matches `pattern`.
pub fn matches(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((pre, rest)) => {
            let Some(tail) = name.strip_prefix(pre) else {
                return false;
            };
            if !rest.contains('*') {
                return tail.ends_with(rest);
            }
            (0..=tail.len())
                .filter(|&i| tail.is_char_boundary(i))
                .any(|i| matches(rest, &tail[i..]))
        }
    }
}

/// What the `*` of a one-wildcard `pattern` stands for in `name` (`None`: no match, or
/// no `*` in the pattern).
pub fn capture<'n>(pattern: &str, name: &'n str) -> Option<&'n str> {
    let (prefix, suffix) = pattern.split_once('*')?;
    (name.len() >= prefix.len() + suffix.len()
        && name.starts_with(prefix)
        && name.ends_with(suffix))
    .then(|| &name[prefix.len()..name.len() - suffix.len()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_match_any_run() {
        assert!(matches("gpt-*", "gpt-4o"));
        assert!(matches("*", "anything"));
        assert!(matches("claude-*-sonnet*", "claude-3-5-sonnet-latest"));
        assert!(matches("exact", "exact"));
        assert!(!matches("exact", "exactly"));
        assert!(!matches("a*a", "a"));
        assert!(!matches("gpt-*", "o1"));
        assert!(matches("é*é", "éé"));
    }

    #[test]
    fn capture_returns_the_starred_part() {
        assert_eq!(capture("openai/*", "openai/gpt-4o"), Some("gpt-4o"));
        assert_eq!(capture("*-mini", "o4-mini"), Some("o4"));
        assert_eq!(capture("a*a", "a"), None);
        assert_eq!(capture("plain", "plain"), None);
        assert_eq!(capture("claude-*", "claude-sonnet-4-5"), Some("sonnet-4-5"));
        assert_eq!(capture("claude-*", "gpt-4"), None);
        assert_eq!(capture("*", "anything"), Some("anything"));
    }
}
