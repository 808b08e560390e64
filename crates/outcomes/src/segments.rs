//! Crisp segments: `PATCH …/meta {"segments":[…]}` replaces the list, so the caller reads the
//! conversation's segments, writes [`merge_segments`] and never drops an operator's.

use crate::outcome::Outcome;

/// Whether `segment` is one of ours (`bot-confirmed` … `bot-reopened`). Other `bot-…`
/// segments belong to operators and are kept.
pub fn is_outcome_segment(segment: &str) -> bool {
    Outcome::ALL.iter().any(|o| o.segment().eq_ignore_ascii_case(segment.trim()))
}

/// `existing` with `ours` added: the union, with only our other outcome segments removed
/// (a conversation carries one outcome segment at a time). Order kept, duplicates dropped.
pub fn merge_segments(existing: &[String], ours: &str) -> Vec<String> {
    let mut merged: Vec<String> = Vec::with_capacity(existing.len() + 1);
    for segment in existing {
        let theirs_or_same = !is_outcome_segment(segment) || segment.trim().eq_ignore_ascii_case(ours);
        if theirs_or_same && !merged.iter().any(|s| s == segment) {
            merged.push(segment.clone());
        }
    }
    if !merged.iter().any(|s| s.trim().eq_ignore_ascii_case(ours)) {
        merged.push(ours.to_owned());
    }
    merged
}

/// The list to write, or `None` when `existing` already is the merge (no PATCH needed).
pub fn segments_to_write(existing: &[String], ours: &str) -> Option<Vec<String>> {
    let merged = merge_segments(existing, ours);
    (merged != existing).then_some(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_union_keeps_every_operator_segment() {
        let existing = list(&["vip", "bot-stuck", "billing", "bot-fans", "vip"]);
        assert_eq!(merge_segments(&existing, "bot-confirmed"), list(&["vip", "billing", "bot-fans", "bot-confirmed"]));
        assert_eq!(merge_segments(&[], "bot-assumed"), list(&["bot-assumed"]));
        assert_eq!(merge_segments(&list(&["bot-assumed", "x"]), "bot-assumed"), list(&["bot-assumed", "x"]));
    }

    #[test]
    fn nothing_to_write_when_already_there() {
        assert_eq!(segments_to_write(&list(&["vip", "bot-escalated"]), "bot-escalated"), None);
        assert_eq!(segments_to_write(&list(&["vip"]), "bot-escalated"), Some(list(&["vip", "bot-escalated"])));
    }
}
