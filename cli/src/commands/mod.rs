//! One module per subcommand.

pub(crate) mod keygen;
pub(crate) mod verify;
