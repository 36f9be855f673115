//! `aip-ca revocations`: the authority's current revocation list (`GET /v1/revocations`), as a
//! table or as the list itself in JSON.

use std::process::ExitCode;
use std::time::Duration;

use aip_aat::revocation::{MAX_SIGNED_LIST_LEN, RevocationList};
use aip_api::client::{Client, Fetched};

use crate::output::{CliError, print_json, print_line, rfc3339, runtime};
use crate::remote::{RemoteArgs, api_error};

/// How long the authority has to send the list.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(flatten)]
    remote: RemoteArgs,
    /// Print the list as the authority publishes it (JSON).
    #[arg(long)]
    json: bool,
}

/// Fetches the current revocation list with `client` (a reader token or better).
pub(crate) fn fetch(client: &Client) -> Result<RevocationList, CliError> {
    let fetched = runtime()?
        .block_on(client.revocations_since(None, FETCH_TIMEOUT, MAX_SIGNED_LIST_LEN))
        .map_err(api_error)?;
    let Fetched::Body { bytes, .. } = fetched else {
        return Err(CliError::new(
            "the authority answered 304 Not Modified to an unconditional request",
        ));
    };
    serde_json::from_slice(&bytes)
        .map_err(|e| CliError::new(format!("the authority's revocation list is malformed: {e}")))
}

pub(crate) fn run(args: Args) -> Result<ExitCode, CliError> {
    args.remote.require_token()?;
    let list = fetch(&args.remote.client()?)?;
    if args.json {
        let value = serde_json::to_value(&list).map_err(CliError::new)?;
        print_json(&value, true)?;
    } else {
        for line in table(&list) {
            print_line(line)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The list as lines of text: a heading with its version, then one row per entry, kind first.
fn table(list: &RevocationList) -> Vec<String> {
    let mut rows: Vec<(&str, String, String, String)> = Vec::new();
    let reason = |r: &Option<String>| r.clone().unwrap_or_default();
    for a in &list.revoked_agents {
        rows.push((
            "agent",
            a.agent_id.to_string(),
            rfc3339(a.revoked_at),
            reason(&a.reason),
        ));
    }
    for u in &list.revoked_users {
        rows.push(("user", u.user_id.clone(), rfc3339(u.revoked_at), reason(&u.reason)));
    }
    for s in &list.revoked_sessions {
        rows.push((
            "session",
            s.session_id.clone(),
            rfc3339(s.revoked_at),
            reason(&s.reason),
        ));
    }
    for t in &list.revoked_aats {
        rows.push(("aat", t.jti.to_string(), rfc3339(t.revoked_at), reason(&t.reason)));
    }
    for d in &list.revoked_delegations {
        rows.push((
            "delegation",
            d.revocation_id.clone(),
            rfc3339(d.revoked_at),
            reason(&d.reason),
        ));
    }
    for s in &list.suspended_agents {
        rows.push((
            "suspended",
            s.agent_id.to_string(),
            rfc3339(s.suspended_at),
            reason(&s.reason),
        ));
    }
    for k in &list.superseded_keys {
        rows.push((
            "old key",
            format!("{} {}", k.agent_id, k.key_thumbprint),
            rfc3339(k.valid_until),
            "accepted until then".to_owned(),
        ));
    }
    let mut lines = vec![format!(
        "revocation list version {}, updated {}",
        list.version,
        rfc3339(list.updated_at)
    )];
    if rows.is_empty() {
        lines.push("nothing is revoked".to_owned());
        return lines;
    }
    let width = rows.iter().map(|r| r.1.chars().count()).max().unwrap_or(0);
    lines.push(format!("{:<10}  {:<width$}  {:<20}  reason", "kind", "id", "since"));
    for (kind, id, at, why) in rows {
        lines.push(
            format!("{kind:<10}  {id:<width$}  {at:<20}  {why}")
                .trim_end()
                .to_owned(),
        );
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_list_says_so() {
        let list = RevocationList::empty(3, time::OffsetDateTime::UNIX_EPOCH);
        let lines = table(&list);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].contains("version 3"), "{lines:?}");
        assert_eq!(lines[1], "nothing is revoked");
    }

    #[test]
    fn every_kind_of_entry_gets_a_row() {
        let list: RevocationList = serde_json::from_value(serde_json::json!({
            "version": 7,
            "updated_at": "2026-01-01T00:00:00Z",
            "revoked_users": [{"user_id": "alice@example.com", "revoked_at": "2026-01-01T00:00:00Z"}],
            "revoked_sessions": [{"session_id": "s-1", "revoked_at": "2026-01-01T00:00:00Z", "reason": "user revoked"}],
            "revoked_delegations": [{"revocation_id": "ab12", "revoked_at": "2026-01-01T00:00:00Z"}],
        }))
        .unwrap();
        let lines = table(&list);
        assert_eq!(lines.len(), 5, "{lines:?}");
        assert!(lines.iter().any(|l| l.starts_with("delegation  ab12")), "{lines:?}");
        assert!(
            lines[2].starts_with("user ") && lines[2].contains("alice@example.com"),
            "{lines:?}"
        );
        assert!(
            lines[3].starts_with("session ") && lines[3].ends_with("user revoked"),
            "{lines:?}"
        );
    }
}
