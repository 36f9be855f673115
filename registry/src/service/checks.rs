//! Checks of request values, answered as `invalid_request`.

use aip_aat::aid::AidMetadata;
use aip_api::checks::{check_name, check_text, check_tool_names};

use super::error::RegistryError;

pub(super) fn check_field(member: &str, value: &str, max: usize) -> Result<(), RegistryError> {
    check_text(member, value, max).map_err(RegistryError::InvalidRequest)
}

/// A name or id people read: no invisible characters or bidirectional controls either.
pub(super) fn check_name_field(member: &str, value: &str, max: usize) -> Result<(), RegistryError> {
    check_name(member, value, max).map_err(RegistryError::InvalidRequest)
}

pub(super) fn check_capabilities(capabilities: &[String]) -> Result<(), RegistryError> {
    check_tool_names("capabilities", capabilities).map_err(RegistryError::InvalidRequest)
}

pub(super) fn check_metadata(metadata: &AidMetadata) -> Result<(), RegistryError> {
    for (member, value) in [
        ("metadata.platform", &metadata.platform),
        ("metadata.version", &metadata.version),
        ("metadata.owner", &metadata.owner),
    ] {
        if let Some(value) = value {
            check_name_field(member, value, 256)?;
        }
    }
    if metadata.tags.len() > 32 {
        return Err(RegistryError::InvalidRequest(
            "metadata.tags has more than 32 tags".into(),
        ));
    }
    for tag in &metadata.tags {
        check_name_field("metadata.tags", tag, 64)?;
    }
    Ok(())
}

pub(super) fn check_reason(reason: Option<&str>) -> Result<(), RegistryError> {
    match reason {
        Some(reason) => check_field("reason", reason, 256),
        None => Ok(()),
    }
}
