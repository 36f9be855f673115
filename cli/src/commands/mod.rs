//! One module per group of subcommands.

pub(crate) mod agents;
pub(crate) mod authority;
pub(crate) mod keygen;
pub(crate) mod tokens;
pub(crate) mod verify;
