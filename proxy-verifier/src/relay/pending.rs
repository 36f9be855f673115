//! The requests forwarded to the server and not answered yet, so that every one of them gets
//! an answer: the server's, a JSON-RPC error at `spec.call_timeout` (the server's late answer is
//! then dropped), or a JSON-RPC error when the server exits first.
//!
//! Ids are kept as written (raw JSON text), as the client sent them and as the server echoes
//! them; a string id with escapes is kept in one canonical spelling, so that a server that
//! re-encodes it still matches.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How many answers of timed-out calls are remembered for dropping; beyond that the oldest is
/// forgotten (its answer, should it ever come, is relayed).
const MAX_EXPIRED: usize = 4096;

/// What to do with an answer from the server.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Answer {
    /// The answer to a waiting call, or to nothing the proxy knows of: relayed.
    Relay,
    /// The answer to a call already answered at its deadline: dropped.
    Late,
}

/// The calls waiting for the server.
#[derive(Debug, Default)]
pub(super) struct Pending {
    state: Mutex<State>,
    /// Wakes the timer when an earlier deadline is set or the server is gone.
    wake: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Numbers the forwarded calls, so that a deadline names one call even when ids repeat.
    next_seq: u64,
    /// Id → the calls with that id still waiting, oldest first.
    waiting: HashMap<Arc<str>, Waiting>,
    /// Deadlines, earliest first (only with a timeout; a reload may shorten it).
    deadlines: BinaryHeap<Reverse<(Instant, u64, Arc<str>)>>,
    /// Ids of calls answered at their deadline, oldest first.
    expired: VecDeque<Arc<str>>,
    /// The server's output ended: no more deadlines to watch.
    closed: bool,
}

/// The calls waiting under one id: nearly always one, so the rest costs nothing until used.
#[derive(Debug)]
struct Waiting {
    oldest: u64,
    more: Vec<u64>,
}

impl Waiting {
    fn count(&self) -> usize {
        1 + self.more.len()
    }
}

impl Pending {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a request about to be forwarded (`id` as written), with its deadline when there
    /// is a timeout.
    pub(super) fn forwarded(&self, id: &str, timeout: Option<Duration>) {
        let key: Arc<str> = key(id).into();
        let mut state = self.state();
        let seq = state.next_seq;
        state.next_seq += 1;
        if let Some(timeout) = timeout {
            let deadline = Instant::now() + timeout;
            let earliest = state
                .deadlines
                .peek()
                .is_none_or(|Reverse((first, _, _))| deadline < *first);
            state.deadlines.push(Reverse((deadline, seq, Arc::clone(&key))));
            if earliest {
                self.wake.notify_one();
            }
        }
        match state.waiting.get_mut(&*key) {
            Some(waiting) => waiting.more.push(seq),
            None => {
                state.waiting.insert(
                    key,
                    Waiting {
                        oldest: seq,
                        more: Vec::new(),
                    },
                );
            }
        }
    }

    /// The server answered `id` (as written).
    pub(super) fn answered(&self, id: &str) -> Answer {
        let key = key(id);
        let mut state = self.state();
        if take(&mut state.waiting, &key, None) {
            return Answer::Relay;
        }
        match state.expired.iter().position(|e| **e == *key) {
            Some(at) => {
                state.expired.remove(at);
                Answer::Late
            }
            None => Answer::Relay,
        }
    }

    /// Waits for the next call whose deadline passed and returns its id (the caller answers
    /// it; its late answer is dropped); `None` once the server is gone.
    pub(super) fn next_expired(&self) -> Option<Arc<str>> {
        let mut state = self.state();
        loop {
            if state.closed {
                return None;
            }
            let now = Instant::now();
            match state.deadlines.peek() {
                None => state = self.wake.wait(state).unwrap_or_else(PoisonError::into_inner),
                Some(Reverse((deadline, _, _))) if *deadline > now => {
                    let wait = *deadline - now;
                    state = self
                        .wake
                        .wait_timeout(state, wait)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                Some(_) => {
                    let Some(Reverse((_, seq, id))) = state.deadlines.pop() else {
                        continue;
                    };
                    if take(&mut state.waiting, &id, Some(seq)) {
                        if state.expired.len() == MAX_EXPIRED {
                            state.expired.pop_front();
                        }
                        state.expired.push_back(Arc::clone(&id));
                        return Some(id);
                    }
                }
            }
        }
    }

    /// The server's output ended: stops the timer and returns the id of every call still
    /// waiting (once per forwarded request).
    pub(super) fn close(&self) -> Vec<Arc<str>> {
        let mut state = self.state();
        state.closed = true;
        state.deadlines.clear();
        self.wake.notify_all();
        let mut ids = Vec::new();
        for (id, waiting) in state.waiting.drain() {
            ids.extend(std::iter::repeat_n(id, waiting.count()));
        }
        ids
    }
}

/// Takes the call `seq` (`None`: the oldest) waiting under `key`; false when it does not wait.
fn take(waiting: &mut HashMap<Arc<str>, Waiting>, key: &str, seq: Option<u64>) -> bool {
    let Some(entry) = waiting.get_mut(key) else {
        return false;
    };
    if seq.is_none_or(|s| s == entry.oldest) {
        if entry.more.is_empty() {
            waiting.remove(key);
        } else {
            entry.oldest = entry.more.remove(0);
        }
        return true;
    }
    match entry.more.iter().position(|&s| Some(s) == seq) {
        Some(at) => {
            entry.more.remove(at);
            true
        }
        None => false,
    }
}

/// The id as written, or its canonical spelling when it is a string with escapes.
fn key(id: &str) -> Cow<'_, str> {
    if id.starts_with('"')
        && id.contains('\\')
        && let Ok(decoded) = serde_json::from_str::<String>(id)
        && let Ok(canonical) = serde_json::to_string(&decoded)
    {
        return Cow::Owned(canonical);
    }
    Cow::Borrowed(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_match_their_calls_whatever_the_spelling() {
        let pending = Pending::default();
        pending.forwarded(r#""a\u0062""#, None);
        pending.forwarded("7", None);
        pending.forwarded("7", None);
        assert_eq!(pending.answered(r#""ab""#), Answer::Relay);
        assert_eq!(pending.answered("7"), Answer::Relay);
        assert_eq!(pending.close(), vec![Arc::<str>::from("7")]);
    }

    #[test]
    fn a_call_past_its_deadline_expires_once_and_its_answer_is_late() {
        let pending = Pending::default();
        pending.forwarded("1", Some(Duration::from_millis(10)));
        pending.forwarded("2", Some(Duration::from_secs(600)));
        assert_eq!(pending.answered("2"), Answer::Relay);
        assert_eq!(pending.next_expired().as_deref(), Some("1"));
        assert_eq!(pending.answered("1"), Answer::Late);
        assert_eq!(pending.answered("1"), Answer::Relay);
        // A deadline of an answered call does not expire a later call with the same id.
        pending.forwarded("3", Some(Duration::from_millis(10)));
        assert_eq!(pending.answered("3"), Answer::Relay);
        pending.forwarded("3", Some(Duration::from_secs(600)));
        pending.forwarded("4", Some(Duration::from_millis(10)));
        assert_eq!(pending.next_expired().as_deref(), Some("4"));
        assert_eq!(pending.close(), vec![Arc::<str>::from("3")]);
        assert_eq!(pending.next_expired(), None);
    }
}
