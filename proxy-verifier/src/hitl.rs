//! Human-in-the-loop holds (IETF draft 6.5, 6.2.5): a call with `action: ask` waits here until a
//! human approves or denies it, over HTTP (`POST /v1/hitl/{hold_id}/approve|deny`, see
//! [`crate::server`]) or in a desktop dialog, or until `hitl.timeout_seconds` passes.
//!
//! The relay runs on plain OS threads, so this API is thread-based and never blocks its caller:
//! [`Hitl::submit`] registers the hold and returns its id at once; the outcome arrives later
//! through the callback given to `submit`, called exactly once, on the hold worker thread.
//!
//! One worker thread per [`Hitl`] does all the waiting: it expires holds at their deadline,
//! starts and watches the dialog processes, kills dialogs that are no longer needed, and runs the
//! callbacks in the order holds were resolved. Callbacks therefore never run on the thread that
//! called `submit`, `approve` or `deny` (an HTTP handler is never stalled by a slow callback),
//! and they must not block for long: they hold up the callbacks behind them.
//!
//! # Timeouts
//!
//! An unanswered hold resolves as [`HoldOutcome::TimedOut`]. This module does not apply
//! `on_timeout`: the caller decides with [`Hitl::settings`]`().allow_on_timeout` (and writes
//! the outcome to the audit log, as 6.5 asks), so the audit record can tell "approved by a human"
//! from "allowed because nobody answered".
//!
//! # Desktop dialogs
//!
//! With [`PromptMode::Desktop`], the first of `zenity`, `kdialog` and `osascript` found on `PATH`
//! shows an Allow/Deny question with the agent, tool, rule and argument preview (`zenity` and
//! `kdialog` only when a display is set: `DISPLAY` or `WAYLAND_DISPLAY`). Exit status 0 approves.
//! Status 1 (the tools' answer for "Deny", "Cancel" or a closed window) denies. Any other status,
//! a signal, or a failure to start means the dialog could not be shown: the hold stays open for
//! HTTP and the timeout, so a broken or headless desktop does not deny every held call at once.
//! The dialog is killed when the hold resolves otherwise (HTTP, timeout, shutdown), its standard
//! streams are never the proxy's (stdout carries JSON-RPC), and at most [`MAX_DIALOGS`] run at
//! a time; later holds get theirs as earlier ones close.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use serde::Serialize;
use time::OffsetDateTime;

use aip_aat::clock::{Clock, SystemClock};

use crate::clock::now_utc;
use crate::policy::HitlSettings;

/// Most holds pending at once; a hold submitted beyond this is denied at once.
pub const MAX_PENDING: usize = 256;
/// Most desktop dialogs shown at once.
pub const MAX_DIALOGS: usize = 4;
/// Resolved hold ids remembered, so that a late answer gets "already resolved", not "unknown".
const RESOLVED_MEMORY: usize = 1024;
/// How often running dialogs are polled for their exit.
const DIALOG_POLL: Duration = Duration::from_millis(100);
/// Longest text shown in a dialog.
const MAX_DIALOG_TEXT: usize = 1500;

/// How held calls are put in front of a human besides the HTTP endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PromptMode {
    /// A native dialog: `zenity`, then `kdialog`, then `osascript`, whichever is on `PATH`
    /// first; none present means no dialog.
    Desktop,
    /// This dialog program (e.g. from a command-line option, or a stand-in in tests).
    Dialog(DialogProgram),
    /// No dialog: holds are answered over HTTP or time out.
    None,
}

/// The dialog tools this module knows how to drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DialogKind {
    /// GNOME's `zenity --question`.
    Zenity,
    /// KDE's `kdialog --yesno`.
    Kdialog,
    /// macOS `osascript` with `display dialog`.
    Osascript,
}

impl DialogKind {
    /// The program name looked up on `PATH`.
    pub fn program_name(self) -> &'static str {
        match self {
            Self::Zenity => "zenity",
            Self::Kdialog => "kdialog",
            Self::Osascript => "osascript",
        }
    }

    /// The command-line arguments that ask `text` under `title`.
    fn arguments(self, title: &str, text: &str) -> Vec<OsString> {
        match self {
            Self::Zenity => vec![
                "--question".into(),
                format!("--title={title}").into(),
                format!("--text={text}").into(),
                "--no-markup".into(),
                "--ok-label=Allow".into(),
                "--cancel-label=Deny".into(),
                "--width=520".into(),
            ],
            // kdialog guesses rich text from tags: take the angle brackets away.
            Self::Kdialog => vec![
                "--title".into(),
                title.into(),
                "--yes-label".into(),
                "Allow".into(),
                "--no-label".into(),
                "Deny".into(),
                "--yesno".into(),
                text.replace('<', "\u{2039}").replace('>', "\u{203a}").into(),
            ],
            // The text travels as an argument, never inside the script, so nothing needs quoting.
            Self::Osascript => vec![
                "-e".into(),
                "on run argv".into(),
                "-e".into(),
                "display dialog (item 1 of argv) with title (item 2 of argv) buttons {\"Deny\", \"Allow\"} \
                 default button \"Deny\" cancel button \"Deny\" with icon caution"
                    .into(),
                "-e".into(),
                "end run".into(),
                text.into(),
                title.into(),
            ],
        }
    }
}

/// A dialog program: which tool, and where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DialogProgram {
    /// How to drive it.
    pub kind: DialogKind,
    /// The executable.
    pub path: PathBuf,
}

impl DialogProgram {
    /// The first of `zenity`, `kdialog` (both only with a display) and `osascript` on `PATH`.
    pub fn detect() -> Option<Self> {
        let display = ["DISPLAY", "WAYLAND_DISPLAY"]
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()));
        let path = std::env::var_os("PATH")?;
        let candidates: &[DialogKind] = if display {
            &[DialogKind::Zenity, DialogKind::Kdialog, DialogKind::Osascript]
        } else {
            &[DialogKind::Osascript]
        };
        candidates.iter().find_map(|&kind| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(kind.program_name()))
                .find(|p| is_executable(p))
                .map(|path| Self { kind, path })
        })
    }
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

/// A held call, as the relay describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldRequest {
    /// The tool, as the client named it.
    pub tool: String,
    /// The arguments as shown to approvers: already redacted (DLP) and truncated by the caller.
    pub arguments_preview: String,
    /// `metadata.name` of the policy in force.
    pub policy_name: String,
    /// The rule that caused the hold, e.g. `tool_rules[write_file].action=ask`.
    pub rule: String,
    /// The agent, when an AAT identified it.
    pub agent_id: Option<String>,
}

/// The unguessable id of a hold: `hold_` and 128 random bits in hex.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct HoldId(String);

impl HoldId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HoldId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a hold ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldOutcome {
    /// A human approved the call: forward it.
    Approved,
    /// A human denied it, the hold could not be kept, or the proxy is shutting down: refuse
    /// it (-32004).
    Denied,
    /// Nobody answered within `hitl.timeout_seconds`: apply `on_timeout`
    /// ([`HitlSettings::allow_on_timeout`]); when denied, refuse with -32005.
    TimedOut,
}

impl HoldOutcome {
    /// `approved`, `denied` or `timed_out`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::TimedOut => "timed_out",
        }
    }
}

/// A pending hold as listed by `GET /v1/hitl`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PendingHold {
    /// The hold's id.
    pub hold_id: HoldId,
    /// The tool.
    pub tool: String,
    /// The redacted, truncated arguments.
    pub arguments_preview: String,
    /// The policy's name.
    pub policy: String,
    /// The rule that caused the hold.
    pub rule: String,
    /// The agent, when known.
    pub agent_id: Option<String>,
    /// When the hold was made (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it times out (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// Why an answer to a hold was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HitlError {
    /// No hold has this id (never existed, or resolved too long ago to remember).
    #[error("no pending hold has this id")]
    NotFound,
    /// The hold was already resolved; the first answer stands.
    #[error("the hold was already resolved ({})", outcome.as_str())]
    AlreadyResolved {
        /// How it was resolved.
        outcome: HoldOutcome,
    },
}

/// The callback of a hold.
pub type OnResolved = Box<dyn FnOnce(HoldOutcome) + Send>;

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

struct Shared {
    dialog: Option<DialogProgram>,
    /// Where `created_at` and `expires_at` come from.
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct State {
    settings: HitlSettings,
    holds: HashMap<String, Hold>,
    /// Callbacks to run, in resolution order.
    ready: VecDeque<(OnResolved, HoldOutcome)>,
    /// Dialog processes to kill and reap.
    dying: Vec<Child>,
    resolved: HashMap<String, HoldOutcome>,
    resolved_order: VecDeque<String>,
    next_seq: u64,
    stopping: bool,
    worker_alive: bool,
}

struct Hold {
    info: PendingHold,
    seq: u64,
    deadline: Instant,
    on_resolved: OnResolved,
    dialog: DialogState,
}

enum DialogState {
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
    fn resolve(&mut self, id: &str, outcome: HoldOutcome) -> Result<(), HitlError> {
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

    fn remember(&mut self, id: String, outcome: HoldOutcome) {
        if self.resolved_order.len() >= RESOLVED_MEMORY
            && let Some(old) = self.resolved_order.pop_front()
        {
            self.resolved.remove(&old);
        }
        self.resolved.insert(id.clone(), outcome);
        self.resolved_order.push_back(id);
    }

    fn running_dialogs(&self) -> usize {
        self.holds
            .values()
            .filter(|h| matches!(h.dialog, DialogState::Running(_) | DialogState::Starting))
            .count()
    }
}

/// What the worker does outside the lock in one round.
#[derive(Default)]
struct Work {
    callbacks: Vec<(OnResolved, HoldOutcome)>,
    dying: Vec<Child>,
    start: Vec<(String, String)>,
}

impl Work {
    fn is_empty(&self) -> bool {
        self.callbacks.is_empty() && self.dying.is_empty() && self.start.is_empty()
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

/// `hold_` and 128 random bits in hex.
fn random_hold_id() -> Option<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).ok()?;
    Some(format!("hold_{}", hex::encode(bytes)))
}

/// Runs a callback once, catching a panic so that one bad callback cannot stop the others.
fn deliver(callback: OnResolved, outcome: HoldOutcome) {
    if std::panic::catch_unwind(AssertUnwindSafe(move || callback(outcome))).is_err() {
        tracing::error!("a hold callback panicked");
    }
}

/// Delivers an outcome after the worker has stopped: on a thread of its own when possible.
fn deliver_detached(callback: OnResolved, outcome: HoldOutcome) {
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

fn run_worker(shared: &Shared) {
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

fn dialog_answer(status: ExitStatus) -> Option<HoldOutcome> {
    match status.code() {
        Some(0) => Some(HoldOutcome::Approved),
        Some(1) => Some(HoldOutcome::Denied),
        _ => None,
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

/// The dialog's question: agent, tool, rule, and the argument preview, in plain text.
fn dialog_text(info: &PendingHold) -> String {
    let mut text = format!(
        "Agent: {}\nPolicy: {}\nTool: {}\nRule: {}\n\nArguments:\n{}",
        info.agent_id.as_deref().unwrap_or("(not identified)"),
        info.policy,
        info.tool,
        info.rule,
        info.arguments_preview,
    );
    text.retain(|c| c == '\n' || !c.is_control());
    if let Some((cut, _)) = text.char_indices().nth(MAX_DIALOG_TEXT) {
        text.truncate(cut);
        text.push('\u{2026}');
    }
    text.push_str(&format!("\n\nHold {}", info.hold_id));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialog_text_is_plain_and_bounded() {
        let now = OffsetDateTime::now_utc();
        let info = PendingHold {
            hold_id: HoldId("hold_x".into()),
            tool: "write\u{7}_file".into(),
            arguments_preview: "a".repeat(5000),
            policy: "p".into(),
            rule: "r".into(),
            agent_id: None,
            created_at: now,
            expires_at: now,
        };
        let text = dialog_text(&info);
        assert!(text.contains("Tool: write_file"));
        assert!(text.chars().count() < MAX_DIALOG_TEXT + 40);
        assert!(text.ends_with("Hold hold_x"));
    }

    #[test]
    fn ids_are_random_and_long() {
        let a = random_hold_id().unwrap();
        let b = random_hold_id().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), "hold_".len() + 32);
    }

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
