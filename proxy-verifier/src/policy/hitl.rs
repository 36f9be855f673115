//! `spec.hitl` (IETF draft 6.2.5): who approves held calls, how long they wait, and what an
//! unanswered hold becomes.

use std::time::Duration;

use super::error::{PolicyError, line_of};
use super::raw;

/// Human-in-the-loop settings (IETF draft 6.2.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HitlSettings {
    /// Who may approve (informational; shown with each hold).
    pub approvers: Vec<String>,
    /// How long a held call waits.
    pub timeout: Duration,
    /// Whether an unanswered hold is allowed (`on_timeout: allow`) instead of denied.
    pub allow_on_timeout: bool,
}

impl Default for HitlSettings {
    fn default() -> Self {
        Self {
            approvers: Vec::new(),
            timeout: Duration::from_secs(60),
            allow_on_timeout: false,
        }
    }
}

pub(super) fn compile_hitl(hitl: Option<raw::Hitl>) -> Result<HitlSettings, PolicyError> {
    let Some(hitl) = hitl else {
        return Ok(HitlSettings::default());
    };
    let mut settings = HitlSettings {
        approvers: hitl.approvers.unwrap_or_default(),
        ..HitlSettings::default()
    };
    if let Some(t) = &hitl.timeout_seconds {
        if t.value == 0 || t.value > 86_400 {
            return Err(PolicyError::invalid(
                "spec.hitl.timeout_seconds",
                t,
                "must be between 1 and 86400",
            ));
        }
        settings.timeout = Duration::from_secs(t.value);
    }
    settings.allow_on_timeout = match hitl.on_timeout.as_ref().map(|s| s.value.as_str()) {
        None | Some("deny") => false,
        Some("allow") => true,
        Some(other) => {
            return Err(PolicyError::invalid_at(
                "spec.hitl.on_timeout",
                hitl.on_timeout.as_ref().and_then(line_of),
                format!("unknown value {other:?}: use deny or allow"),
            ));
        }
    };
    Ok(settings)
}
