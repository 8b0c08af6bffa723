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
//! same way.
//!
//! Takeover (with `REDIS_URL`): while the database is down or a call's entries wait for it,
//! the call's context — the call, its agent, every turn the session knows (written or not) and
//! the entries still waiting, each with its key — is kept in Redis ([`Takeover`], refreshed as
//! turns are journaled, dropped once the journal is written). When the session's socket is lost
//! (this replica killed or drained), the `CallSession` reconnects to another replica, which finds
//! the database away, reads the context ([`Takeover::load`]), goes on with the same history and
//! adopts the waiting entries ([`CallJournal::adopt`]) under their original keys: whichever
//! replica writes an entry first stores it, the other's write of the same key stores nothing.
//! Without Redis (or with Redis away as well) the journal lives in process only: an origin that
//! dies while entries wait loses them, and `/ready`'s `journal.depth` says how many wait.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shared::agent::Agent;
use shared::call::Call;
use shared::call_event::CallEventKind;
use shared::journal::{Admission, Entry, Journal, JournalLimits, JournalReport, content_hash};
use shared::turn::{Turn, TurnRole};
use tokio::sync::{Notify, watch};

use crate::AppState;
use crate::metrics::Metrics;
use crate::store::{NewTurn, StoreError};
use prometheus_client::metrics::counter::Counter;

/// Pause after a failed write before the next try (the probe may not have noticed yet).
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// What a journal entry writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// A turn to append, and the event published once it is written.
    Turn {
        /// The turn.
        turn: NewTurn,
        /// Published with the turn's `seq`.
        announce: Option<Announce>,
    },
    /// The reply was spoken over: it becomes what was heard.
    Interrupted {
        /// The reply.
        reply: Reply,
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

/// The reply a correction is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// Journaled at this entry (its place in the same journal).
    Entry(u64),
    /// Already written, at this `seq` of the call's turns.
    Stored(u32),
}

/// The call event a written turn announces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announce {
    /// Its kind.
    pub kind: CallEventKind,
    /// The model that answered.
    pub model: Option<String>,
    /// Its time to first token.
    pub ttft_ms: Option<u32>,
}

/// What another replica needs to go on with a live call while the database is away.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Takeover {
    /// The call.
    pub call: Call,
    /// Its agent.
    pub agent: Agent,
    /// Every turn of the call the session knew, in order (`seq` 0: not written yet).
    pub history: Vec<Turn>,
    /// The entries still waiting for the database, oldest first.
    pub pending: Vec<Pending>,
}

/// A waiting entry, as a takeover carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// Its place in the journal it was journaled in.
    pub entry: u64,
    /// The key the database keeps with it.
    pub key: String,
    /// What to write.
    pub record: Record,
}

impl Takeover {
    /// The context another replica kept for the call, when there is one and it reads.
    pub async fn load(state: &AppState, tenant: &str, call_id: &str) -> Option<Self> {
        let json = state.fanout.load_takeover(tenant, call_id).await?;
        serde_json::from_str(&json)
            .inspect_err(|error| {
                tracing::warn!(call_id, %error, "a live call's kept context does not read; ignored");
            })
            .ok()
            .filter(|takeover: &Self| takeover.call.tenant_id == tenant && takeover.call.id == call_id)
    }
}

/// The context a journal keeps for a takeover: the session's call, agent and history.
#[derive(Debug)]
struct Context {
    call: Call,
    agent: Arc<Agent>,
    history: Vec<Turn>,
    /// A reply's entry → its place in `history`, for a correction.
    replies: HashMap<u64, usize>,
}

impl Context {
    /// What `record`, journaled at `entry`, changes in the history.
    fn apply(&mut self, entry: u64, record: &Record) {
        match record {
            Record::Turn { turn, .. } => {
                if turn.role == TurnRole::Assistant {
                    self.replies.insert(entry, self.history.len());
                }
                self.history.push(turn.stored(0));
            }
            Record::Interrupted { reply, heard } => {
                let index = match reply {
                    Reply::Entry(entry) => self.replies.get(entry).copied(),
                    Reply::Stored(seq) => self.history.iter().rposition(|turn| turn.seq == *seq),
                };
                if let Some(turn) = index.and_then(|index| self.history.get_mut(index)) {
                    turn.text.clone_from(heard);
                    turn.interrupted = true;
                }
            }
        }
    }
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
            adopted_keys: Mutex::new(HashMap::new()),
            context: Mutex::new(None),
            changed: Notify::new(),
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
        if state.fanout.keeps_takeovers() {
            tokio::spawn(keep_for_takeover(state.clone(), Arc::clone(&journal)));
        }
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
    /// Entry → its key, for entries adopted from another replica's journal (the others' key is
    /// [`shared::journal::entry_key`] of this journal).
    adopted_keys: Mutex<HashMap<u64, String>>,
    /// The session's context, once bound, when takeovers are kept.
    context: Mutex<Option<Context>>,
    /// Something a takeover carries changed.
    changed: Notify,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl CallJournal {
    fn lock(&self) -> std::sync::MutexGuard<'_, Journal<Record>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Journals `record`; its place, or `None` when a bound refused it (logged with its hash
    /// and counted as dropped).
    pub fn push(&self, state: &AppState, record: Record) -> Option<u64> {
        let mut context = lock(&self.context);
        let applied = context.is_some().then(|| record.clone());
        let entry = self.enqueue(state, record)?;
        if let (Some(context), Some(record)) = (context.as_mut(), applied) {
            context.apply(entry, &record);
        }
        drop(context);
        self.changed.notify_one();
        Some(entry)
    }

    /// The session is bound: from now on a takeover carries this context (when takeovers are
    /// kept at all).
    pub fn bind(&self, state: &AppState, call: &Call, agent: &Arc<Agent>, history: &[Turn]) {
        if !state.fanout.keeps_takeovers() {
            return;
        }
        *lock(&self.context) = Some(Context {
            call: call.clone(),
            agent: Arc::clone(agent),
            history: history.to_vec(),
            replies: HashMap::new(),
        });
        self.changed.notify_one();
    }

    /// Journals the entries another replica's session left waiting, in their order and under
    /// their own keys (so each is stored once, whichever replica writes it first). Before
    /// [`CallJournal::bind`]: the takeover's history has them already.
    pub fn adopt(&self, state: &AppState, pending: Vec<Pending>) {
        let mut here = HashMap::new();
        for Pending { entry, key, record } in pending {
            let record = match record {
                Record::Interrupted {
                    reply: Reply::Entry(reply),
                    heard,
                } => match here.get(&reply) {
                    Some(&adopted) => Record::Interrupted {
                        reply: Reply::Entry(adopted),
                        heard,
                    },
                    // Its reply was dropped where it was journaled: nothing to correct.
                    None => continue,
                },
                record => record,
            };
            if let Some(adopted) = self.enqueue(state, record) {
                lock(&self.adopted_keys).insert(adopted, key);
                here.insert(entry, adopted);
            }
        }
        tracing::info!(call_id = %self.call_id, adopted = here.len(), "a live call was taken over with its waiting turns");
    }

    /// What another replica needs to go on with this call, once bound.
    fn takeover(&self) -> Option<Takeover> {
        let context = lock(&self.context);
        let context = context.as_ref()?;
        let seqs = lock(&self.seqs);
        let journal = self.lock();
        let pending = journal
            .entries()
            .map(|entry| Pending {
                entry: entry.seq,
                key: self.key_of(entry.seq),
                record: match &entry.item {
                    // A reply written meanwhile is named by its `seq`: the adopting journal
                    // does not have its entry.
                    Record::Interrupted {
                        reply: Reply::Entry(reply),
                        heard,
                    } => Record::Interrupted {
                        reply: seqs
                            .get(reply)
                            .map_or(Reply::Entry(*reply), |&seq| Reply::Stored(seq)),
                        heard: heard.clone(),
                    },
                    record => record.clone(),
                },
            })
            .collect();
        Some(Takeover {
            call: context.call.clone(),
            agent: Agent::clone(&context.agent),
            history: context.history.clone(),
            pending,
        })
    }

    /// The key the database keeps with `entry`.
    fn key_of(&self, entry: u64) -> String {
        lock(&self.adopted_keys)
            .get(&entry)
            .cloned()
            .unwrap_or_else(|| shared::journal::entry_key(&self.id, entry))
    }

    /// Queues `record` within the bounds; its place, or `None` when a bound refused it.
    fn enqueue(&self, state: &AppState, record: Record) -> Option<u64> {
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

    /// The `seq` a reply was stored at, once written.
    fn reply_seq(&self, reply: Reply) -> Option<u32> {
        match reply {
            Reply::Entry(entry) => self.seq_of(entry),
            Reply::Stored(seq) => Some(seq),
        }
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
        self.changed.notify_one();
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
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
        self.changed.notify_one();
        written.is_some_and(|written| written.late)
    }
}

/// Writes `journal`'s entries in order until it is closed and empty.
async fn flush(state: AppState, journal: Arc<CallJournal>) {
    loop {
        let Some(entry) = journal.front() else {
            if journal.is_closed() {
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

/// Keeps the call's context in Redis while the database is down or the call's entries wait
/// for it, so another replica can take the call over; drops it once they are written. A
/// closed session's context is no longer refreshed (the replica that took the call over keeps
/// its own), only dropped once this journal is written.
async fn keep_for_takeover(state: AppState, journal: Arc<CallJournal>) {
    let mut database = state.db_health.watch();
    let mut kept = false;
    loop {
        let database_up = *database.borrow_and_update();
        let waiting = journal.lock().is_blocked();
        if (!database_up || waiting) && !journal.is_closed() {
            if let Some(json) = journal
                .takeover()
                .and_then(|takeover| serde_json::to_string(&takeover).ok())
            {
                kept |= state
                    .fanout
                    .save_takeover(&journal.tenant, &journal.call_id, json)
                    .await;
            }
        } else if kept && database_up && journal.depth() == 0 {
            state
                .fanout
                .drop_takeover(&journal.tenant, &journal.call_id)
                .await;
            kept = false;
        }
        if journal.is_closed() && journal.depth() == 0 && !kept {
            break;
        }
        tokio::select! {
            () = journal.changed.notified() => {}
            changed = database.changed() => {
                if changed.is_err() {
                    break;
                }
            }
        }
    }
}

/// Writes one entry; the turn's `seq` (none for a correction).
async fn write(
    state: &AppState,
    journal: &CallJournal,
    entry: &Entry<Record>,
) -> Result<Option<u32>, StoreError> {
    match &entry.item {
        Record::Turn { turn, .. } => {
            let key = journal.key_of(entry.seq);
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
            let Some(seq) = journal.reply_seq(*reply) else {
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
        Record::Interrupted { reply, .. } => match journal.reply_seq(*reply) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(role: TurnRole, text: &str) -> Record {
        Record::Turn {
            turn: NewTurn::said(role, text, 1_000),
            announce: None,
        }
    }

    fn context() -> Context {
        Context {
            call: serde_json::from_value(serde_json::json!({
                "id": "CA01", "tenant_id": "t1", "agent_id": "ava", "source": "phone",
                "region": "us-east-1", "status": "active", "turn_count": 0, "started_at_ms": 1
            }))
            .unwrap_or_else(|error| panic!("a call: {error}")),
            agent: Arc::new(
                serde_json::from_value(serde_json::json!({
                    "id": "ava", "tenant_id": "t1", "name": "Ava", "system_prompt": "Be brief.",
                    "model": "m", "version": 1, "created_at_ms": 1, "updated_at_ms": 1
                }))
                .unwrap_or_else(|error| panic!("an agent: {error}")),
            ),
            history: vec![NewTurn::said(TurnRole::User, "stored", 0).stored(1)],
            replies: HashMap::new(),
        }
    }

    #[test]
    fn the_context_follows_what_is_journaled_and_corrected() {
        let mut context = context();
        context.apply(0, &turn(TurnRole::User, "When do you open?"));
        context.apply(
            1,
            &turn(TurnRole::Assistant, "At nine. And we close at five."),
        );
        context.apply(
            2,
            &Record::Interrupted {
                reply: Reply::Entry(1),
                heard: "At nine.".into(),
            },
        );
        // A correction of a reply written before (named by its seq).
        context.apply(
            3,
            &Record::Interrupted {
                reply: Reply::Stored(1),
                heard: "sto".into(),
            },
        );
        let said: Vec<(&str, bool, u32)> = context
            .history
            .iter()
            .map(|turn| (turn.text.as_str(), turn.interrupted, turn.seq))
            .collect();
        assert_eq!(
            said,
            [
                ("sto", true, 1),
                ("When do you open?", false, 0),
                ("At nine.", true, 0),
            ]
        );
    }

    #[test]
    fn a_takeover_reads_back_as_it_was_kept() {
        let context = context();
        let takeover = Takeover {
            call: context.call.clone(),
            agent: Agent::clone(&context.agent),
            history: context.history.clone(),
            pending: vec![
                Pending {
                    entry: 4,
                    key: "j1:4".into(),
                    record: turn(TurnRole::Dtmf, "5"),
                },
                Pending {
                    entry: 5,
                    key: "j1:5".into(),
                    record: Record::Interrupted {
                        reply: Reply::Stored(3),
                        heard: "We open".into(),
                    },
                },
            ],
        };
        let json = serde_json::to_string(&takeover).unwrap_or_default();
        let read: Takeover =
            serde_json::from_str(&json).unwrap_or_else(|error| panic!("{error}: {json}"));
        assert_eq!(read, takeover);
    }
}
