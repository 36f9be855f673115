//! One module per group of subcommands.

pub(crate) mod agents;
pub(crate) mod authority;
pub(crate) mod backup;
pub(crate) mod delegate;
pub(crate) mod issuer;
pub(crate) mod issuing;
pub(crate) mod keygen;
pub(crate) mod revocations;
pub(crate) mod token;
pub(crate) mod tokens;
pub(crate) mod verify;
