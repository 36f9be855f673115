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
//!
//! # Files
//!
//! - `hold` — a hold as callers see it: [`HoldRequest`], [`HoldId`], [`HoldOutcome`],
//!   [`PendingHold`], [`HitlError`];
//! - `dialog` — the desktop dialog programs, their arguments, answers and text;
//! - `state` — what the queue and its worker thread share;
//! - `worker` — the worker thread: deadlines, dialogs, callbacks;
//! - `queue` — [`Hitl`], the hold queue itself.

mod dialog;
mod hold;
mod queue;
mod state;
mod worker;

pub use dialog::{DialogKind, DialogProgram, MAX_DIALOGS, PromptMode};
pub use hold::{HitlError, HoldId, HoldOutcome, HoldRequest, OnResolved, PendingHold};
pub use queue::{Hitl, MAX_PENDING};
