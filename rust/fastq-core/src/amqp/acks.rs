//! Which `basic.ack` frames settle a set of delivery tags.
//!
//! `multiple=true` acknowledges every unacknowledged tag up to the one given, so it is only safe
//! for a run that starts at the oldest outstanding tag. Acking a tag twice, or one the channel
//! never delivered, makes RabbitMQ close the channel (PRECONDITION_FAILED), so tags that are not
//! outstanding are skipped.

use std::collections::BTreeSet;

/// One frame: the tag, and whether it also settles every outstanding tag below it.
pub type AckFrame = (u64, bool);

/// Removes `tags` from `outstanding` and returns the frames that acknowledge them.
pub fn plan_acks(outstanding: &mut BTreeSet<u64>, tags: &[u64]) -> Vec<AckFrame> {
    let wanted: BTreeSet<u64> = tags
        .iter()
        .copied()
        .filter(|t| outstanding.contains(t))
        .collect();
    if wanted.is_empty() {
        return Vec::new();
    }
    // The longest run of the oldest outstanding tags that are all being acked.
    let prefix_end = outstanding
        .iter()
        .take_while(|t| wanted.contains(t))
        .last()
        .copied();
    let mut frames = Vec::new();
    let mut rest = wanted.iter().copied().peekable();
    if let Some(end) = prefix_end {
        let run: Vec<u64> = outstanding.range(..=end).copied().collect();
        if run.len() > 1 {
            frames.push((end, true));
            while rest.next_if(|t| *t <= end).is_some() {}
        }
    }
    frames.extend(rest.map(|t| (t, false)));
    for t in &wanted {
        outstanding.remove(t);
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(tags: &[u64]) -> BTreeSet<u64> {
        tags.iter().copied().collect()
    }

    #[test]
    fn contiguous_prefix_is_one_frame() {
        let mut out = set(&[1, 2, 3, 4, 5]);
        assert_eq!(plan_acks(&mut out, &[3, 1, 2]), vec![(3, true)]);
        assert_eq!(out, set(&[4, 5]));
    }

    #[test]
    fn a_gap_keeps_later_tags_single() {
        let mut out = set(&[1, 2, 3, 4, 5]);
        // 3 is still running elsewhere: acking "up to 4" would settle it too.
        assert_eq!(plan_acks(&mut out, &[1, 2, 4]), vec![(2, true), (4, false)]);
        assert_eq!(out, set(&[3, 5]));
    }

    #[test]
    fn single_and_unknown_tags() {
        let mut out = set(&[7, 8]);
        assert_eq!(plan_acks(&mut out, &[8, 99, 8]), vec![(8, false)]);
        assert_eq!(plan_acks(&mut out, &[8]), vec![]);
        assert_eq!(plan_acks(&mut out, &[7]), vec![(7, false)]);
        assert!(out.is_empty());
    }
}
