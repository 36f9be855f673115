//! The hold queue ([`Hitl`]): holds are submitted, listed, answered and shut down here; the
//! waiting is done by its worker thread.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::{self, JoinHandle, ThreadId};
use std::time::Instant;

use aip_aat::clock::{Clock, SystemClock};

use crate::clock::now_utc;
use crate::policy::HitlSettings;

use super::dialog::{DialogProgram, PromptMode};
use super::hold::{HitlError, HoldId, HoldOutcome, HoldRequest, OnResolved, PendingHold, random_hold_id};
use super::state::{DialogState, Hold, Shared, State};
use super::worker::{deliver_detached, run_worker};

/// Most holds pending at once; a hold submitted beyond this is denied at once.
pub const MAX_PENDING: usize = 256;

/// The hold queue. Create one per proxy and share it with `Arc`; dropping it shuts it down.
pub struct Hitl {
    shared: Arc<Shared>,
    worker: Mutex<Option<JoinHandle<()>>>,
    worker_id: ThreadId,
}

impl fmt::Debug for Hitl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hitl")
            .field("dialog", &self.shared.dialog)
            .field("pending", &self.shared.lock().holds.len())
            .finish_non_exhaustive()
    }
}

impl Hitl {
    /// A hold queue with these settings (the policy's `spec.hitl`) and prompt. Starts the worker
    /// thread; fails only when the thread cannot be started.
    pub fn new(settings: HitlSettings, prompt: PromptMode) -> std::io::Result<Self> {
        Self::with_clock(settings, prompt, Arc::new(SystemClock))
    }

    /// As [`Hitl::new`], reading the wall-clock times of holds (`created_at`, `expires_at`)
    /// from `clock`.
    pub fn with_clock(settings: HitlSettings, prompt: PromptMode, clock: Arc<dyn Clock>) -> std::io::Result<Self> {
        let dialog = match prompt {
            PromptMode::Desktop => DialogProgram::detect(),
            PromptMode::Dialog(program) => Some(program),
            PromptMode::None => None,
        };
        let shared = Arc::new(Shared {
            dialog,
            clock,
            state: Mutex::new(State {
                settings,
                holds: HashMap::new(),
                ready: VecDeque::new(),
                dying: Vec::new(),
                resolved: HashMap::new(),
                resolved_order: VecDeque::new(),
                next_seq: 0,
                stopping: false,
                worker_alive: true,
            }),
            wake: Condvar::new(),
        });
        let for_worker = Arc::clone(&shared);
        let worker = thread::Builder::new()
            .name("aip-hitl".into())
            .spawn(move || run_worker(&for_worker))?;
        Ok(Self {
            shared,
            worker_id: worker.thread().id(),
            worker: Mutex::new(Some(worker)),
        })
    }

    /// The settings in force for new holds.
    pub fn settings(&self) -> HitlSettings {
        self.shared.lock().settings.clone()
    }

    /// Replaces the settings (on policy reload). Pending holds keep their deadlines.
    pub fn update_settings(&self, settings: HitlSettings) {
        self.shared.lock().settings = settings;
    }

    /// The dialog program in use, if any.
    pub fn dialog(&self) -> Option<&DialogProgram> {
        self.shared.dialog.as_ref()
    }

    /// Holds `request` until it is answered or times out, and returns at once. `on_resolved`
    /// is called exactly once, on the hold worker thread, with the outcome.
    ///
    /// A hold that cannot be kept is denied at once (the callback still comes from the worker,
    /// or after shutdown from a short-lived thread): when [`MAX_PENDING`] holds are already
    /// waiting, when the queue is shut down, or when no random id can be made.
    pub fn submit(&self, request: HoldRequest, on_resolved: OnResolved) -> HoldId {
        let random = random_hold_id();
        let mut st = self.shared.lock();
        let seq = st.next_seq;
        st.next_seq += 1;
        let id = random.clone().unwrap_or_else(|| format!("hold_unavailable_{seq}"));
        let refuse = if random.is_none() {
            Some("no random id could be made")
        } else if st.stopping {
            Some("the proxy is shutting down")
        } else if st.holds.len() >= MAX_PENDING {
            Some("too many holds are pending")
        } else {
            None
        };
        if let Some(why) = refuse {
            tracing::warn!(hold_id = %id, tool = %request.tool, "held call denied: {why}");
            st.remember(id.clone(), HoldOutcome::Denied);
            if st.worker_alive {
                st.ready.push_back((on_resolved, HoldOutcome::Denied));
                drop(st);
                self.shared.wake.notify_all();
            } else {
                drop(st);
                deliver_detached(on_resolved, HoldOutcome::Denied);
            }
            return HoldId(id);
        }
        let timeout = st.settings.timeout;
        let now = now_utc(&*self.shared.clock);
        let hold = Hold {
            info: PendingHold {
                hold_id: HoldId(id.clone()),
                tool: request.tool,
                arguments_preview: request.arguments_preview,
                policy: request.policy_name,
                rule: request.rule,
                agent_id: request.agent_id,
                created_at: now,
                expires_at: now + timeout,
            },
            seq,
            deadline: Instant::now() + timeout,
            on_resolved,
            dialog: if self.shared.dialog.is_some() {
                DialogState::Wanted
            } else {
                DialogState::Off
            },
        };
        tracing::info!(hold_id = %id, tool = %hold.info.tool, rule = %hold.info.rule, "call held for approval");
        st.holds.insert(id.clone(), hold);
        drop(st);
        self.shared.wake.notify_all();
        HoldId(id)
    }

    /// Approves a pending hold.
    pub fn approve(&self, id: &str) -> Result<(), HitlError> {
        self.answer(id, HoldOutcome::Approved)
    }

    /// Denies a pending hold.
    pub fn deny(&self, id: &str) -> Result<(), HitlError> {
        self.answer(id, HoldOutcome::Denied)
    }

    fn answer(&self, id: &str, outcome: HoldOutcome) -> Result<(), HitlError> {
        let result = self.shared.lock().resolve(id, outcome);
        if result.is_ok() {
            tracing::info!(hold_id = %id, outcome = outcome.as_str(), "hold answered");
            self.shared.wake.notify_all();
        }
        result
    }

    /// The pending holds, oldest first.
    pub fn pending(&self) -> Vec<PendingHold> {
        let st = self.shared.lock();
        let mut holds: Vec<_> = st.holds.values().map(|h| (h.seq, h.info.clone())).collect();
        drop(st);
        holds.sort_by_key(|(seq, _)| *seq);
        holds.into_iter().map(|(_, info)| info).collect()
    }

    /// Denies every pending hold, closes their dialogs, and waits until every callback has run.
    /// Later submissions are denied at once. Idempotent; also done on drop.
    pub fn shutdown(&self) {
        {
            let mut st = self.shared.lock();
            st.stopping = true;
            let ids: Vec<String> = st.holds.keys().cloned().collect();
            for id in ids {
                let _ = st.resolve(&id, HoldOutcome::Denied);
            }
        }
        self.shared.wake.notify_all();
        // A callback that drops the last reference to this queue runs on the worker itself,
        // which must not wait for itself.
        if thread::current().id() == self.worker_id {
            return;
        }
        let worker = self.worker.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(worker) = worker
            && worker.join().is_err()
        {
            tracing::error!("the hold worker thread failed");
        }
    }
}

impl Drop for Hitl {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use time::OffsetDateTime;

    use super::*;

    #[test]
    fn holds_take_their_times_from_the_clock() {
        let clock = Arc::new(aip_aat::clock::FixedClock::new(1_770_000_000));
        let settings = HitlSettings {
            timeout: Duration::from_secs(90),
            ..HitlSettings::default()
        };
        let hitl = Hitl::with_clock(settings, PromptMode::None, clock).unwrap();
        let request = HoldRequest {
            tool: "write_file".into(),
            arguments_preview: "{}".into(),
            policy_name: "p".into(),
            rule: "r".into(),
            agent_id: None,
        };
        hitl.submit(request, Box::new(|_| {}));
        let pending = hitl.pending();
        assert_eq!(pending.len(), 1);
        let at = OffsetDateTime::from_unix_timestamp(1_770_000_000).unwrap();
        assert_eq!(pending[0].created_at, at);
        assert_eq!(pending[0].expires_at, at + Duration::from_secs(90));
        let listed = serde_json::to_value(&pending[0]).unwrap();
        assert_eq!(listed["created_at"], "2026-02-02T02:40:00Z");
        assert_eq!(listed["expires_at"], "2026-02-02T02:41:30Z");
        hitl.shutdown();
    }
}
