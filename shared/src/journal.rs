//! A call's write-behind journal: what was said on a live call (the caller's words, the replies,
//! interruptions, key presses) waits here, in the order it happened, until the database has it.
//! Entries leave only from the front and only once written, so they reach the database in order;
//! each carries a key unique to the call ([`entry_key`]) that the database keeps, so writing one
//! twice (an answer lost after a commit) stores it once. Bounded per call and per process: a turn
//! that does not fit is refused ([`Admission::Full`]) — the caller of [`Journal::push`] logs it
//! (with its content hash, never its text) and counts it as dropped. Sans-I/O: time is an
//! argument.

use std::collections::VecDeque;

/// Default bound of one call's journal (`JOURNAL_MAX_PER_CALL`).
pub const DEFAULT_MAX_PER_CALL: usize = 1_000;
/// Default bound of every journal of a process together (`JOURNAL_MAX_TOTAL`).
pub const DEFAULT_MAX_TOTAL: usize = 100_000;

/// How many entries may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalLimits {
    /// In one call's journal.
    pub per_call: usize,
    /// In every journal of the process together.
    pub total: usize,
}

impl Default for JournalLimits {
    fn default() -> Self {
        Self {
            per_call: DEFAULT_MAX_PER_CALL,
            total: DEFAULT_MAX_TOTAL,
        }
    }
}

/// One waiting entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<T> {
    /// Its place in this journal, from 0; with the journal's id, its key ([`entry_key`]).
    pub seq: u64,
    /// When it was journaled (Unix ms).
    pub at_ms: u64,
    /// Failed writes of this entry so far.
    pub failures: u32,
    /// It waited for the database: a write failed while it was journaled.
    pub late: bool,
    /// What to write.
    pub item: T,
}

/// Whether an entry was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Queued at `seq`.
    Queued {
        /// Its place in the journal.
        seq: u64,
    },
    /// Refused: the bound that was hit.
    Full(Bound),
}

/// Which bound refused an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// The call's own.
    PerCall,
    /// The process's.
    Total,
}

/// An entry that reached the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written<T> {
    /// The entry.
    pub entry: Entry<T>,
    /// It waited for the database (a write failed while it was journaled).
    pub late: bool,
    /// How long it waited in the journal, in ms.
    pub waited_ms: u64,
}

/// The key stored with an entry: unique per call across replicas and reconnects (the journal's
/// id is chosen at random per relay session).
pub fn entry_key(journal_id: &str, seq: u64) -> String {
    format!("{journal_id}:{seq}")
}

/// The SHA-256 of what a dropped entry said, in hex: what the log keeps of it (its text may be
/// personal, the hash lets an operator match it to a recording).
pub fn content_hash(text: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The journals' state as `/ready` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct JournalReport {
    /// Entries waiting for the database, every call together.
    pub depth: u64,
    /// Age of the oldest waiting entry, in ms (0 when none waits).
    pub oldest_age_ms: u64,
    /// Turns written after waiting for the database, since start.
    pub written_late: u64,
    /// Turns that could not be kept (a bound hit, or refused by the database), since start.
    pub dropped: u64,
}

/// One call's journal.
#[derive(Debug, Clone)]
pub struct Journal<T> {
    entries: VecDeque<Entry<T>>,
    next_seq: u64,
    /// A write failed and none succeeded since: what is journaled now waits.
    blocked: bool,
}

impl<T> Default for Journal<T> {
    fn default() -> Self {
        Self {
            entries: VecDeque::new(),
            next_seq: 0,
            blocked: false,
        }
    }
}

impl<T> Journal<T> {
    /// Queues `item` at `now_ms`, unless this journal holds `limits.per_call` entries or the
    /// process `limits.total` (`process_depth`, every journal's entries).
    pub fn push(
        &mut self,
        item: T,
        now_ms: u64,
        process_depth: usize,
        limits: JournalLimits,
    ) -> Admission {
        if self.entries.len() >= limits.per_call {
            return Admission::Full(Bound::PerCall);
        }
        if process_depth >= limits.total {
            return Admission::Full(Bound::Total);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries.push_back(Entry {
            seq,
            at_ms: now_ms,
            failures: 0,
            late: self.blocked,
            item,
        });
        Admission::Queued { seq }
    }

    /// The next entry to write: always the oldest.
    pub fn front(&self) -> Option<&Entry<T>> {
        self.entries.front()
    }

    /// The entry at `seq` could not be written; it stays first, and every entry waiting (and
    /// every one journaled until a write succeeds) will be written late.
    pub fn failed(&mut self, seq: u64) {
        if let Some(entry) = self.entries.front_mut().filter(|e| e.seq == seq) {
            entry.failures = entry.failures.saturating_add(1);
            self.blocked = true;
            for entry in &mut self.entries {
                entry.late = true;
            }
        }
    }

    /// The entry at `seq` is in the database: it leaves. `None` when `seq` is not the front
    /// (written out of order, or twice), which changes nothing.
    pub fn written(&mut self, seq: u64, now_ms: u64) -> Option<Written<T>> {
        if self.entries.front()?.seq != seq {
            return None;
        }
        let entry = self.entries.pop_front()?;
        self.blocked = false;
        Some(Written {
            late: entry.late,
            waited_ms: now_ms.saturating_sub(entry.at_ms),
            entry,
        })
    }

    /// Entries waiting.
    pub fn depth(&self) -> usize {
        self.entries.len()
    }

    /// Every waiting entry, oldest first.
    pub fn entries(&self) -> impl Iterator<Item = &Entry<T>> {
        self.entries.iter()
    }

    /// A write failed and none succeeded since: what waits is waiting for the database.
    pub fn is_blocked(&self) -> bool {
        self.blocked && !self.entries.is_empty()
    }

    /// When the oldest waiting entry was journaled.
    pub fn oldest_at_ms(&self) -> Option<u64> {
        self.entries.front().map(|e| e.at_ms)
    }

    /// Age of the oldest waiting entry at `now_ms` (0 when empty).
    pub fn oldest_age_ms(&self, now_ms: u64) -> u64 {
        self.oldest_at_ms()
            .map_or(0, |at| now_ms.saturating_sub(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: JournalLimits = JournalLimits {
        per_call: 3,
        total: 10,
    };

    #[test]
    fn entries_leave_in_order_and_only_once() {
        let mut journal = Journal::default();
        for (at, text) in [(10, "hi"), (20, "hello"), (30, "bye")] {
            assert!(matches!(
                journal.push(text, at, 0, LIMITS),
                Admission::Queued { .. }
            ));
        }
        assert_eq!(journal.depth(), 3);
        // Out of order: nothing leaves.
        assert_eq!(journal.written(1, 40), None);
        let first = journal.written(0, 40).expect("front");
        assert_eq!(
            (first.entry.item, first.late, first.waited_ms),
            ("hi", false, 30)
        );
        // Twice: nothing more leaves.
        assert_eq!(journal.written(0, 41), None);
        assert_eq!(journal.front().map(|e| e.item), Some("hello"));
        assert_eq!(journal.depth(), 2);
    }

    #[test]
    fn entries_that_waited_for_the_database_are_written_late() {
        let limits = JournalLimits {
            per_call: 10,
            total: 10,
        };
        let mut journal = Journal::default();
        journal.push("hi", 100, 0, limits);
        journal.push("behind", 150, 0, limits);
        journal.failed(7); // not the front: ignored
        assert_eq!(journal.front().map(|e| e.failures), Some(0));
        journal.failed(0);
        assert_eq!(journal.front().map(|e| e.failures), Some(1));
        // Journaled while the database is away: late too.
        journal.push("during", 1_000, 0, limits);
        assert_eq!(journal.oldest_age_ms(2_100), 2_000);
        let written = journal.written(0, 2_100).expect("front");
        assert!(written.late);
        assert_eq!(written.waited_ms, 2_000);
        // The database is back: what is journaled now is written on time.
        journal.push("after", 2_200, 0, limits);
        let late: Vec<(&str, bool)> = std::iter::from_fn(|| {
            let seq = journal.front()?.seq;
            journal
                .written(seq, 2_300)
                .map(|written| (written.entry.item, written.late))
        })
        .collect();
        assert_eq!(late, [("behind", true), ("during", true), ("after", false)]);
        assert_eq!(journal.oldest_age_ms(3_000), 0);
    }

    #[test]
    fn a_journal_is_blocked_while_a_failed_write_has_entries_waiting() {
        let mut journal = Journal::default();
        journal.push("hi", 0, 0, LIMITS);
        journal.push("there", 1, 0, LIMITS);
        assert!(!journal.is_blocked());
        journal.failed(0);
        assert!(journal.is_blocked());
        let waiting: Vec<(u64, &str)> = journal.entries().map(|e| (e.seq, e.item)).collect();
        assert_eq!(waiting, [(0, "hi"), (1, "there")]);
        journal.written(0, 2);
        assert!(!journal.is_blocked(), "a write succeeded");
        journal.failed(1);
        journal.written(1, 3);
        assert!(!journal.is_blocked(), "nothing waits");
    }

    #[test]
    fn bounds_refuse_new_entries_and_keep_the_old() {
        let mut journal = Journal::default();
        for at in 0..3 {
            journal.push(at, at, 0, LIMITS);
        }
        assert_eq!(
            journal.push(3, 3, 0, LIMITS),
            Admission::Full(Bound::PerCall)
        );
        let mut other = Journal::default();
        assert_eq!(other.push(0, 0, 10, LIMITS), Admission::Full(Bound::Total));
        assert_eq!(other.push(0, 0, 9, LIMITS), Admission::Queued { seq: 0 });
        assert_eq!(journal.front().map(|e| e.item), Some(0));
        // Room again once the front is written; seqs keep counting.
        journal.written(0, 5);
        assert_eq!(journal.push(9, 6, 0, LIMITS), Admission::Queued { seq: 3 });
    }

    #[test]
    fn the_content_hash_is_sha256_in_hex() {
        // FIPS 180-2's "abc" vector.
        assert_eq!(
            content_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn keys_name_the_journal_and_the_place() {
        assert_eq!(entry_key("j1", 4), "j1:4");
        assert_ne!(entry_key("j1", 4), entry_key("j2", 4));
    }
}
