//! The live calls' write-behind journals: a phone call goes on while the database is away.
//!
//! Every turn of a relay session (the caller's words, the reply, a key press, the agent's own
//! lines, a late interruption's correction) is journaled ([`CallJournal::push`]) and written by
//! the call's flusher task, in order and once (`shared::journal`; the store keeps each entry's
//! key, `Store::append_journaled`). While the database is up an entry is written at once and
//! the session waits for it (at most `JOURNAL_WRITE_WAIT_MS`) before closing the reply, so a
//! healthy call behaves as before: durable before `last: true`. While it is down
//! (`crate::db_health`) the reply closes anyway and the entries wait, in process, until the
//! database returns; the call's events (`turn_started`, `turn_finished`, …) are published as its
//! entries are written.
//!
//! Bounds (`JOURNAL_MAX_PER_CALL`, `JOURNAL_MAX_TOTAL`): an entry that does not fit is dropped —
//! logged with its content hash (never its text), counted in `origin_journal_dropped_total`, and
//! the call's relay gets an `error` note `journal_full` (for the edge's log); the call itself
//! goes on. An entry the database refuses for good (the call no longer exists) is dropped the
//! same way. The journal lives in process: an origin that stops while entries wait loses them
//! (`/ready`'s `journal.depth` says how many wait; keeping them in Redis is not built yet).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shared::call_event::CallEventKind;
use shared::journal::{Admission, Entry, Journal, JournalLimits, JournalReport, content_hash};
use tokio::sync::{Notify, watch};

use crate::AppState;
use crate::metrics::Metrics;
use crate::store::{NewTurn, StoreError};
use prometheus_client::metrics::counter::Counter;

/// Pause after a failed write before the next try (the probe may not have noticed yet).
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// What a journal entry writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A turn to append, and the event published once it is written.
    Turn {
        /// The turn.
        turn: NewTurn,
        /// Published with the turn's `seq`.
        announce: Option<Announce>,
    },
    /// The reply journaled at `reply` (its place in this journal) was spoken over: it becomes
    /// what was heard.
    Interrupted {
        /// The reply's entry.
        reply: u64,
        /// `utteranceUntilInterrupt`.
        heard: String,
    },
}

impl Record {
    fn text(&self) -> &str {
        match self {
            Record::Turn { turn, .. } => &turn.text,
            Record::Interrupted { heard, .. } => heard,
        }
    }
}

/// The call event a written turn announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    /// Its kind.
    pub kind: CallEventKind,
    /// The model that answered.
    pub model: Option<String>,
    /// Its time to first token.
    pub ttft_ms: Option<u32>,
}

/// Every journal of the process, for the bounds and `/ready`/`/metrics`.
#[derive(Debug)]
pub struct Journals {
    limits: JournalLimits,
    depth: AtomicUsize,
    /// `Metrics::journal_written_late`, shared.
    written_late: Counter,
    /// `Metrics::journal_dropped`, shared.
    dropped: Counter,
    calls: Mutex<HashMap<String, Arc<CallJournal>>>,
}

impl Journals {
    /// Journals bounded by `limits`, counting in `metrics`.
    pub fn new(limits: JournalLimits, metrics: &Metrics) -> Self {
        Self {
            limits,
            depth: AtomicUsize::new(0),
            written_late: metrics.journal_written_late.clone(),
            dropped: metrics.journal_dropped.clone(),
            calls: Mutex::new(HashMap::new()),
        }
    }

    /// Opens a journal for the call and starts its flusher.
    pub fn open(state: &AppState, tenant: &str, call_id: &str) -> Arc<CallJournal> {
        let journal = Arc::new(CallJournal {
            id: uuid::Uuid::new_v4().simple().to_string(),
            tenant: tenant.to_owned(),
            call_id: call_id.to_owned(),
            entries: Mutex::new(Journal::default()),
            wake: Notify::new(),
            left: watch::Sender::new(0),
            seqs: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
        });
        state
            .journals
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(journal.id.clone(), Arc::clone(&journal));
        // Its writes belong to the call's trace (the relay request's span).
        tokio::spawn(tracing::Instrument::in_current_span(flush(
            state.clone(),
            Arc::clone(&journal),
        )));
        journal
    }

    /// Depth, oldest entry's age, and the counters at `now_ms`.
    pub fn report(&self, now_ms: u64) -> JournalReport {
        let oldest = self
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter_map(|call| call.lock().oldest_at_ms())
            .min();
        JournalReport {
            depth: self.depth.load(Ordering::Relaxed) as u64,
            oldest_age_ms: oldest.map_or(0, |at| now_ms.saturating_sub(at)),
            written_late: self.written_late.get(),
            dropped: self.dropped.get(),
        }
    }
}

/// One relay session's journal.
#[derive(Debug)]
pub struct CallJournal {
    id: String,
    tenant: String,
    call_id: String,
    entries: Mutex<Journal<Record>>,
    wake: Notify,
    /// How many entries have left (written or dropped): entry `n` is settled once this is > n.
    left: watch::Sender<u64>,
    /// Entry → the `seq` it was stored at.
    seqs: Mutex<HashMap<u64, u32>>,
    closed: AtomicBool,
}

impl CallJournal {
    fn lock(&self) -> std::sync::MutexGuard<'_, Journal<Record>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Journals `record`; its place, or `None` when a bound refused it (logged with its hash
    /// and counted as dropped).
    pub fn push(&self, state: &AppState, record: Record) -> Option<u64> {
        let journals = &state.journals;
        let text_hash = content_hash(record.text());
        let admission = self.lock().push(
            record,
            state.now_ms(),
            journals.depth.load(Ordering::Relaxed),
            journals.limits,
        );
        match admission {
            Admission::Queued { seq } => {
                journals.depth.fetch_add(1, Ordering::Relaxed);
                self.wake.notify_one();
                Some(seq)
            }
            Admission::Full(bound) => {
                journals.dropped.inc();
                tracing::error!(
                    call_id = %self.call_id,
                    ?bound,
                    content_sha256 = %text_hash,
                    "journal full: a turn was dropped"
                );
                None
            }
        }
    }

    /// Waits at most `wait` for `entry` to be written; the `seq` it was stored at.
    pub async fn written(&self, entry: u64, wait: Duration) -> Option<u32> {
        let mut left = self.left.subscribe();
        let _ = tokio::time::timeout(wait, left.wait_for(|left| *left > entry)).await;
        self.seq_of(entry)
    }

    /// The `seq` `entry` was stored at, once written.
    pub fn seq_of(&self, entry: u64) -> Option<u32> {
        self.seqs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&entry)
            .copied()
    }

    /// The session ended: the flusher stops once every entry has left.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Entries waiting.
    pub fn depth(&self) -> usize {
        self.lock().depth()
    }

    fn front(&self) -> Option<Entry<Record>> {
        self.lock().front().cloned()
    }

    /// `entry` left the journal (written at `seq`, or dropped).
    fn settle(&self, state: &AppState, entry: u64, seq: Option<u32>) -> bool {
        if let Some(seq) = seq {
            self.seqs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(entry, seq);
        }
        let written = self.lock().written(entry, state.now_ms());
        state.journals.depth.fetch_sub(1, Ordering::Relaxed);
        self.left.send_modify(|left| *left = entry + 1);
        written.is_some_and(|written| written.late)
    }
}

/// Writes `journal`'s entries in order until it is closed and empty.
async fn flush(state: AppState, journal: Arc<CallJournal>) {
    loop {
        let Some(entry) = journal.front() else {
            if journal.closed.load(Ordering::Acquire) {
                break;
            }
            journal.wake.notified().await;
            continue;
        };
        if !state.db_health.is_up() {
            journal.lock().failed(entry.seq);
            state.db_health.until_up().await;
            continue;
        }
        match write(&state, &journal, &entry).await {
            Ok(seq) => {
                if journal.settle(&state, entry.seq, seq) {
                    state.journals.written_late.inc();
                    tracing::info!(call_id = %journal.call_id, entry = entry.seq, "a journaled turn was written late");
                }
                announce(&state, &journal, &entry.item, seq).await;
            }
            Err(StoreError::Unavailable(cause)) => {
                state.metrics.db_error(&StoreError::Unavailable(cause));
                journal.lock().failed(entry.seq);
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(error) => {
                state.journals.dropped.inc();
                tracing::error!(
                    call_id = %journal.call_id,
                    entry = entry.seq,
                    %error,
                    content_sha256 = %content_hash(entry.item.text()),
                    "the database refused a journaled turn: dropped"
                );
                journal.settle(&state, entry.seq, None);
            }
        }
    }
    state
        .journals
        .calls
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&journal.id);
}

/// Writes one entry; the turn's `seq` (none for a correction).
async fn write(
    state: &AppState,
    journal: &CallJournal,
    entry: &Entry<Record>,
) -> Result<Option<u32>, StoreError> {
    match &entry.item {
        Record::Turn { turn, .. } => {
            let key = shared::journal::entry_key(&journal.id, entry.seq);
            let seq = state
                .store
                .append_journaled(&journal.tenant, &journal.call_id, &key, turn)
                .await?;
            // A reply's `turn.completed` may be waiting in the outbox.
            state.webhooks.wake();
            Ok(Some(seq))
        }
        Record::Interrupted { reply, heard } => {
            // A reply that was never written (dropped) has nothing to correct.
            let Some(seq) = journal.seq_of(*reply) else {
                return Ok(None);
            };
            state
                .store
                .mark_interrupted(&journal.tenant, &journal.call_id, seq, heard)
                .await
                .map(|_| None)
        }
    }
}

async fn announce(state: &AppState, journal: &CallJournal, record: &Record, seq: Option<u32>) {
    let (kind, seq, model, ttft_ms) = match record {
        Record::Turn {
            announce: Some(announce),
            ..
        } => (announce.kind, seq, announce.model.clone(), announce.ttft_ms),
        Record::Interrupted { reply, .. } => match journal.seq_of(*reply) {
            Some(seq) => (CallEventKind::TurnInterrupted, Some(seq), None, None),
            None => return,
        },
        Record::Turn { announce: None, .. } => return,
    };
    crate::turn::publish(
        state,
        &journal.tenant,
        &journal.call_id,
        kind,
        seq,
        model,
        ttft_ms,
        state.now_ms(),
    )
    .await;
}
