//! The proxy's OpenAPI 3.1 description: both of its HTTP listeners in one document, their
//! paths apart — the Streamable HTTP front door of `--serve` ([`front::openapi`]) and the HTTP
//! API of `--listen` ([`server::openapi`]). Printed by `aip-proxy --openapi`; committed as
//! `docs/openapi/proxy.json` (docs/proxy.md, "OpenAPI description").

use utoipa::OpenApi;

use crate::{front, server};

/// The document's information; the operations come from the two listeners.
#[derive(OpenApi)]
#[openapi(info(
    title = "aip-proxy HTTP APIs",
    description = "The two HTTP listeners of `aip-proxy`, whose paths do not overlap; each operation's tag says which serves it.\n\n* **`--serve ADDR` — the Streamable HTTP front door** (tags `mcp`, `metadata`), in front of `--upstream URL` or `--target \"cmd\"`: MCP over Streamable HTTP at `/mcp`, and the protected resource metadata (RFC 9728) that leads MCP clients to the authority. Errors outside MCP are `{\"error\", \"error_description\"}`; refusals by the policy, revocation included, are JSON-RPC errors inside the session.\n* **`--listen ADDR` — the HTTP API** (tags `status`, `validation`, `approvals`, `tools`), on a loopback address only, without TLS: health, metrics, validation of a tool call, approvals and accepting changed tools. Everything but `/health` and `/metrics` needs the admin token (`Authorization: Bearer`). Errors are `{\"error\", \"error_description\"}` with the status given: `404` (`not_found`) for a path it does not serve, `405` (`invalid_request`) for a method a path does not take. JSON request bodies are parsed strictly (unknown members refused) and limited to 256 KiB.",
    license(name = "Apache-2.0", identifier = "Apache-2.0"),
))]
struct ProxyApi;

/// The proxy's description: the front door's operations and the HTTP API's.
pub fn description() -> utoipa::openapi::OpenApi {
    let mut doc = ProxyApi::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc.merge(front::openapi::FrontDoorApi::openapi());
    doc.merge(server::openapi::HttpApi::openapi());
    doc
}

/// The description as printed and committed: pretty JSON, with a final newline.
pub fn description_json() -> String {
    // Serializing a document of strings, maps and numbers cannot fail.
    let mut json = description().to_pretty_json().unwrap_or_default();
    json.push('\n');
    json
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_listeners_are_in_the_one_document() {
        let doc = serde_json::to_value(description()).unwrap();
        assert!(doc["paths"]["/mcp"]["post"].is_object());
        assert!(doc["paths"]["/v1/validate"]["post"].is_object());
        let schemes = &doc["components"]["securitySchemes"];
        assert!(schemes["aat"].is_object() && schemes["adminToken"].is_object());
        let tags: Vec<&str> = doc["tags"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["name"].as_str())
            .collect();
        assert_eq!(tags, ["mcp", "metadata", "status", "validation", "approvals", "tools"]);
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    }
}
