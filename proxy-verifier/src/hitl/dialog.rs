//! Desktop approval dialogs: which program shows them (`zenity`, `kdialog`, `osascript`), how
//! it is asked, what its exit status means, and the text it shows.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use super::hold::{HoldOutcome, PendingHold};

/// Most desktop dialogs shown at once.
pub const MAX_DIALOGS: usize = 4;
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
    pub(super) fn arguments(self, title: &str, text: &str) -> Vec<OsString> {
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

pub(super) fn dialog_answer(status: ExitStatus) -> Option<HoldOutcome> {
    match status.code() {
        Some(0) => Some(HoldOutcome::Approved),
        Some(1) => Some(HoldOutcome::Denied),
        _ => None,
    }
}

/// The dialog's question: agent, tool, rule, and the argument preview, in plain text.
pub(super) fn dialog_text(info: &PendingHold) -> String {
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
    use time::OffsetDateTime;

    use super::*;
    use crate::hitl::hold::HoldId;

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
}
