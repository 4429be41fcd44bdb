//! Per-user memory quotas (`memory.max_memories_per_user`): the rule both backends apply
//! inside their write transaction, so that concurrent writers and several instances
//! cannot pass the limit. A user's memories in every project count towards it.

use super::scope::SEPARATOR;
use super::store::StoreError;

/// The store keys of every project scope of `owner` are the keys in `[lo, hi)`, compared
/// bytewise (`owner#` up to, not including, the next byte value after `#`).
pub fn project_key_range(owner: &str) -> (String, String) {
    let next = char::from(SEPARATOR as u8 + 1);
    (format!("{owner}{SEPARATOR}"), format!("{owner}{next}"))
}

/// Refuses an explicit add when the owner of `user_id` already keeps `kept` memories and
/// the limit is `max` (0: no limit).
pub fn check(max: u64, user_id: &str, kept: u64) -> Result<(), StoreError> {
    if max == 0 || kept < max {
        return Ok(());
    }
    let (owner, _) = super::scope::parse_key(user_id);
    Err(StoreError::Quota(format!(
        "user `{owner}` already keeps {kept} memories, the most memory.max_memories_per_user \
         allows ({max}); delete some (DELETE /v1/memories/{{id}}) or raise the limit"
    )))
}

/// Whether a captured exchange may be stored; a skipped one is counted in
/// `memproxy_memory_quota_skipped_total` and logged.
pub fn admits_capture(max: u64, user_id: &str, kept: u64) -> bool {
    if max == 0 || kept < max {
        return true;
    }
    metrics::counter!("memproxy_memory_quota_skipped_total").increment(1);
    tracing::warn!(
        user_id = super::scope::parse_key(user_id).0,
        kept,
        max,
        "memory quota reached; the exchange is not captured"
    );
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_holds_every_project_of_the_owner_and_no_other_user() {
        let (lo, hi) = project_key_range("al");
        let inside = |k: &str| k >= lo.as_str() && k < hi.as_str();
        assert!(inside("al#p") && inside("al#") && inside("al#zzz\u{10FFFF}"));
        assert!(!inside("al") && !inside("alice") && !inside("al$") && !inside("a#p"));
    }

    #[test]
    fn a_full_quota_refuses_adds_and_skips_captures() {
        assert!(check(0, "u", 10).is_ok());
        assert!(check(3, "u#p", 2).is_ok());
        let e = check(3, "u#p", 3).unwrap_err();
        assert!(matches!(&e, StoreError::Quota(m) if m.contains("user `u`") && m.contains("(3)")));
        assert!(admits_capture(3, "u", 2) && !admits_capture(3, "u", 3));
    }
}
