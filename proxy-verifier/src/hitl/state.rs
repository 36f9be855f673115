//! What the hold queue and its worker thread share: the pending holds with their deadlines and
//! dialogs, the outcomes waiting to be delivered, and the resolved ids remembered.

use std::collections::{HashMap, VecDeque};
use std::process::Child;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use aip_aat::clock::Clock;

use crate::policy::HitlSettings;

use super::dialog::DialogProgram;
use super::hold::{HitlError, HoldOutcome, OnResolved, PendingHold};

/// Resolved hold ids remembered, so that a late answer gets "already resolved", not "unknown".
const RESOLVED_MEMORY: usize = 1024;

pub(super) struct Shared {
    pub(super) dialog: Option<DialogProgram>,
    /// Where `created_at` and `expires_at` come from.
    pub(super) clock: Arc<dyn Clock>,
    pub(super) state: Mutex<State>,
    pub(super) wake: Condvar,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

pub(super) struct State {
    pub(super) settings: HitlSettings,
    pub(super) holds: HashMap<String, Hold>,
    /// Callbacks to run, in resolution order.
    pub(super) ready: VecDeque<(OnResolved, HoldOutcome)>,
    /// Dialog processes to kill and reap.
    pub(super) dying: Vec<Child>,
    pub(super) resolved: HashMap<String, HoldOutcome>,
    pub(super) resolved_order: VecDeque<String>,
    pub(super) next_seq: u64,
    pub(super) stopping: bool,
    pub(super) worker_alive: bool,
}

pub(super) struct Hold {
    pub(super) info: PendingHold,
    pub(super) seq: u64,
    pub(super) deadline: Instant,
    pub(super) on_resolved: OnResolved,
    pub(super) dialog: DialogState,
}

pub(super) enum DialogState {
    /// No dialog (none configured, or it failed).
    Off,
    /// Waiting for a free dialog slot.
    Wanted,
    /// Being started by the worker.
    Starting,
    /// On screen.
    Running(Child),
}

impl State {
    /// Resolves a pending hold: its callback is queued, its dialog marked for killing.
    pub(super) fn resolve(&mut self, id: &str, outcome: HoldOutcome) -> Result<(), HitlError> {
        let Some(hold) = self.holds.remove(id) else {
            return Err(match self.resolved.get(id) {
                Some(&outcome) => HitlError::AlreadyResolved { outcome },
                None => HitlError::NotFound,
            });
        };
        if let DialogState::Running(child) = hold.dialog {
            self.dying.push(child);
        }
        self.ready.push_back((hold.on_resolved, outcome));
        self.remember(id.to_owned(), outcome);
        Ok(())
    }

    pub(super) fn remember(&mut self, id: String, outcome: HoldOutcome) {
        if self.resolved_order.len() >= RESOLVED_MEMORY
            && let Some(old) = self.resolved_order.pop_front()
        {
            self.resolved.remove(&old);
        }
        self.resolved.insert(id.clone(), outcome);
        self.resolved_order.push_back(id);
    }

    pub(super) fn running_dialogs(&self) -> usize {
        self.holds
            .values()
            .filter(|h| matches!(h.dialog, DialogState::Running(_) | DialogState::Starting))
            .count()
    }
}

/// What the worker does outside the lock in one round.
#[derive(Default)]
pub(super) struct Work {
    pub(super) callbacks: Vec<(OnResolved, HoldOutcome)>,
    pub(super) dying: Vec<Child>,
    pub(super) start: Vec<(String, String)>,
}

impl Work {
    pub(super) fn is_empty(&self) -> bool {
        self.callbacks.is_empty() && self.dying.is_empty() && self.start.is_empty()
    }
}
