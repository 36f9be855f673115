//! Capabilities = requested ∩ the agent's registered capabilities ∩ the user's delegatable
//! tools (spec 9.5).

use aip_api::issuer::RequestedCapabilities;

/// Whether `list` grants `tool` (`*` grants any).
pub(super) fn allows(list: &[String], tool: &str) -> bool {
    list.iter().any(|t| t == "*" || t == tool)
}

/// Capabilities = requested ∩ the agent's registered capabilities ∩ the user's delegatable
/// tools (spec 9.5). No `requested_capabilities` asks for everything the agent is registered
/// for. Returns (granted, denied).
pub fn intersect(
    requested: Option<&RequestedCapabilities>,
    agent: &[String],
    user: Option<&[String]>,
) -> (Vec<String>, Vec<String>) {
    let wanted: Vec<String> = match requested {
        Some(r) => r.tools.clone(),
        None => agent.to_vec(),
    };
    wanted
        .into_iter()
        .partition(|tool| allows(agent, tool) && user.is_none_or(|u| allows(u, tool)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn capabilities_are_the_intersection() {
        let requested = RequestedCapabilities {
            tools: tools(&["read_file", "write_file", "exec"]),
            ..Default::default()
        };
        let agent = tools(&["read_file", "write_file"]);
        let user = tools(&["read_file", "exec"]);
        assert_eq!(
            intersect(Some(&requested), &agent, Some(&user)),
            (tools(&["read_file"]), tools(&["write_file", "exec"]))
        );
        // `*` grants any tool, but a requested `*` needs `*` on both sides.
        assert_eq!(
            intersect(Some(&requested), &tools(&["*"]), Some(&tools(&["*"]))),
            (tools(&["read_file", "write_file", "exec"]), vec![])
        );
        let star = RequestedCapabilities {
            tools: tools(&["*"]),
            ..Default::default()
        };
        assert_eq!(
            intersect(Some(&star), &agent, Some(&tools(&["*"]))),
            (vec![], tools(&["*"]))
        );
        // Nothing requested: everything the agent has, within the user's tools; no user
        // (autonomous agents): the agent's capabilities.
        assert_eq!(
            intersect(None, &agent, Some(&user)),
            (tools(&["read_file"]), tools(&["write_file"]))
        );
        assert_eq!(intersect(None, &agent, None), (agent.clone(), vec![]));
        // An explicit empty request grants nothing.
        assert_eq!(
            intersect(Some(&RequestedCapabilities::default()), &agent, None),
            (vec![], vec![])
        );
    }
}
