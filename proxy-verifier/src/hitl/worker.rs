//! The hold worker thread: it expires holds at their deadline, starts, watches and kills the
//! dialogs, and runs the callbacks in the order holds were resolved.

use std::panic::AssertUnwindSafe;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use super::dialog::{MAX_DIALOGS, dialog_answer, dialog_text};
use super::hold::{HoldOutcome, OnResolved};
use super::state::{DialogState, Shared, State, Work};

/// How often running dialogs are polled for their exit.
const DIALOG_POLL: Duration = Duration::from_millis(100);

/// Runs a callback once, catching a panic so that one bad callback cannot stop the others.
fn deliver(callback: OnResolved, outcome: HoldOutcome) {
    if std::panic::catch_unwind(AssertUnwindSafe(move || callback(outcome))).is_err() {
        tracing::error!("a hold callback panicked");
    }
}

/// Delivers an outcome after the worker has stopped: on a thread of its own when possible.
pub(super) fn deliver_detached(callback: OnResolved, outcome: HoldOutcome) {
    let slot = Arc::new(Mutex::new(Some(callback)));
    let for_thread = Arc::clone(&slot);
    let spawned = thread::Builder::new().name("aip-hitl-late".into()).spawn(move || {
        let callback = for_thread.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(callback) = callback {
            deliver(callback, outcome);
        }
    });
    if spawned.is_err() {
        let callback = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(callback) = callback {
            deliver(callback, outcome);
        }
    }
}

pub(super) fn run_worker(shared: &Shared) {
    let mut reaping: Vec<(Child, Instant)> = Vec::new();
    loop {
        let mut st = shared.lock();
        let work = loop {
            let now = Instant::now();
            let expired: Vec<String> = st
                .holds
                .iter()
                .filter(|(_, h)| h.deadline <= now)
                .map(|(id, _)| id.clone())
                .collect();
            for id in expired {
                tracing::info!(hold_id = %id, "hold timed out");
                let _ = st.resolve(&id, HoldOutcome::TimedOut);
            }
            poll_dialogs(&mut st);
            let mut work = Work {
                callbacks: st.ready.drain(..).collect(),
                dying: std::mem::take(&mut st.dying),
                start: Vec::new(),
            };
            if shared.dialog.is_some() && !st.stopping {
                let free = MAX_DIALOGS.saturating_sub(st.running_dialogs());
                let mut wanted: Vec<(u64, &String)> = st
                    .holds
                    .iter()
                    .filter(|(_, h)| matches!(h.dialog, DialogState::Wanted))
                    .map(|(id, h)| (h.seq, id))
                    .collect();
                wanted.sort();
                let chosen: Vec<String> = wanted.into_iter().take(free).map(|(_, id)| id.clone()).collect();
                for id in chosen {
                    if let Some(hold) = st.holds.get_mut(&id) {
                        hold.dialog = DialogState::Starting;
                        work.start.push((id, dialog_text(&hold.info)));
                    }
                }
            }
            if !work.is_empty() {
                break work;
            }
            if st.stopping && st.holds.is_empty() {
                // Killed dialogs not yet reaped are left to the exiting process.
                st.worker_alive = false;
                return;
            }
            let dialogs_open = st.holds.values().any(|h| matches!(h.dialog, DialogState::Running(_)));
            let mut wait = st
                .holds
                .values()
                .map(|h| h.deadline.saturating_duration_since(now))
                .min()
                .unwrap_or(Duration::from_secs(3600));
            if dialogs_open || !reaping.is_empty() {
                wait = wait.min(DIALOG_POLL);
            }
            // Round up so that a deadline is not polled in a busy loop just before it passes.
            let wait = wait.max(Duration::from_millis(1));
            st = shared
                .wake
                .wait_timeout(st, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            reap(&mut reaping);
        };
        drop(st);

        for mut child in work.dying {
            let _ = child.kill();
            reaping.push((child, Instant::now()));
        }
        reap(&mut reaping);
        for (id, text) in work.start {
            start_dialog(shared, &id, &text);
        }
        for (callback, outcome) in work.callbacks {
            deliver(callback, outcome);
        }
    }
}

/// Reaps killed dialogs; one that will not die within a minute is given up on.
fn reap(reaping: &mut Vec<(Child, Instant)>) {
    reaping.retain_mut(|(child, since)| match child.try_wait() {
        Ok(Some(_)) | Err(_) => false,
        Ok(None) => {
            if since.elapsed() > Duration::from_secs(60) {
                tracing::warn!(
                    pid = child.id(),
                    "a dialog process does not exit; no longer waiting for it"
                );
                false
            } else {
                true
            }
        }
    });
}

/// Checks the running dialogs: an answer resolves its hold; a failed dialog leaves it open.
fn poll_dialogs(st: &mut State) {
    let mut answers = Vec::new();
    for (id, hold) in &mut st.holds {
        let DialogState::Running(child) = &mut hold.dialog else {
            continue;
        };
        match child.try_wait() {
            Ok(None) => {}
            Ok(Some(status)) => match dialog_answer(status) {
                Some(outcome) => answers.push((id.clone(), outcome)),
                None => {
                    tracing::warn!(hold_id = %id, %status, "the approval dialog failed; the hold waits for HTTP or its timeout");
                    hold.dialog = DialogState::Off;
                }
            },
            Err(e) => {
                tracing::warn!(hold_id = %id, error = %e, "cannot watch the approval dialog");
                if let DialogState::Running(child) = std::mem::replace(&mut hold.dialog, DialogState::Off) {
                    st.dying.push(child);
                }
            }
        }
    }
    for (id, outcome) in answers {
        tracing::info!(hold_id = %id, outcome = outcome.as_str(), "hold answered in the desktop dialog");
        let _ = st.resolve(&id, outcome);
    }
}

/// Starts the dialog of hold `id` outside the lock, then attaches it (or kills it when the hold
/// was resolved meanwhile).
fn start_dialog(shared: &Shared, id: &str, text: &str) {
    let Some(program) = &shared.dialog else {
        return;
    };
    let spawned = Command::new(&program.path)
        .args(program.kind.arguments("AIP: approve tool call?", text))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let mut st = shared.lock();
    let hold = st.holds.get_mut(id);
    match (spawned, hold) {
        (Ok(child), Some(hold)) => hold.dialog = DialogState::Running(child),
        (Ok(child), None) => st.dying.push(child),
        (Err(e), hold) => {
            tracing::warn!(hold_id = %id, program = %program.path.display(), error = %e, "cannot start the approval dialog");
            if let Some(hold) = hold {
                hold.dialog = DialogState::Off;
            }
        }
    }
    drop(st);
    // Wake the worker's next round (it may have a killed dialog or a new poll to do).
    shared.wake.notify_all();
}
