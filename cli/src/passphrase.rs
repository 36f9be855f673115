//! Where a key passphrase comes from, in order: `--insecure-no-passphrase`,
//! `--passphrase-file`, the `AIP_PASSPHRASE` environment variable, an interactive prompt.

use std::io::IsTerminal as _;
use std::path::PathBuf;

use aip_aat::keyfile::Passphrase;

use crate::output::CliError;

/// Environment variable holding a key passphrase.
pub(crate) const ENV_PASSPHRASE: &str = "AIP_PASSPHRASE";

/// The passphrase flags shared by every command that writes or opens a key file.
#[derive(clap::Args, Debug)]
pub(crate) struct PassphraseArgs {
    /// Read the passphrase from the first line of this file
    /// [default source: the AIP_PASSPHRASE environment variable, then a prompt].
    #[arg(long, value_name = "FILE", conflicts_with = "insecure_no_passphrase")]
    passphrase_file: Option<PathBuf>,
    /// Store the key unencrypted. For tests and demos only.
    #[arg(long)]
    insecure_no_passphrase: bool,
}

/// Whether a new file must be encrypted, and with what.
pub(crate) enum Choice {
    Passphrase(Passphrase),
    Insecure,
}

impl Choice {
    /// How to store a new key file.
    pub(crate) fn protection(&self) -> aip_aat::keyfile::Protection<'_> {
        match self {
            Self::Passphrase(p) => aip_aat::keyfile::Protection::Passphrase(p, aip_aat::keyfile::KdfParams::default()),
            Self::Insecure => aip_aat::keyfile::Protection::InsecureNone,
        }
    }

    /// The passphrase, if any.
    pub(crate) fn passphrase(&self) -> Option<&Passphrase> {
        match self {
            Self::Passphrase(p) => Some(p),
            Self::Insecure => None,
        }
    }
}

impl PassphraseArgs {
    /// The passphrase for a new key file (a prompt asks twice).
    pub(crate) fn for_new_key(&self) -> Result<Choice, CliError> {
        self.resolve(true, None)
    }

    /// The passphrase for new key files, with `purpose` (what it protects, when it is asked
    /// again) told before a prompt asks twice.
    pub(crate) fn for_new_key_explained(&self, purpose: &str) -> Result<Choice, CliError> {
        self.resolve(true, Some(purpose))
    }

    /// The passphrase that opens an existing key file (a prompt asks once).
    pub(crate) fn for_existing_key(&self) -> Result<Choice, CliError> {
        self.resolve(false, None)
    }

    /// The passphrase that opens an existing key file, with `purpose` told before a prompt.
    pub(crate) fn for_existing_key_explained(&self, purpose: &str) -> Result<Choice, CliError> {
        self.resolve(false, Some(purpose))
    }

    fn resolve(&self, confirm: bool, purpose: Option<&str>) -> Result<Choice, CliError> {
        if self.insecure_no_passphrase {
            return Ok(Choice::Insecure);
        }
        let passphrase = if let Some(path) = &self.passphrase_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| CliError::new(format!("cannot read passphrase file {}: {e}", path.display())))?;
            let line = text.lines().next().unwrap_or_default();
            Passphrase::new(line)
        } else if let Some(value) = std::env::var_os(ENV_PASSPHRASE) {
            Passphrase::new(
                value
                    .into_string()
                    .map_err(|_| CliError::new(format!("{ENV_PASSPHRASE} is not UTF-8")))?,
            )
        } else {
            prompt(confirm, purpose)?
        };
        if passphrase.is_empty() {
            return Err(CliError::new("the passphrase is empty")
                .hint("choose a non-empty passphrase, or pass --insecure-no-passphrase for a throwaway key"));
        }
        Ok(Choice::Passphrase(passphrase))
    }
}

fn prompt(confirm: bool, purpose: Option<&str>) -> Result<Passphrase, CliError> {
    if !std::io::stdin().is_terminal() {
        return Err(
            CliError::new("no passphrase given and no terminal to ask for one").hint(format!(
                "use --passphrase-file FILE, set {ENV_PASSPHRASE}, or pass --insecure-no-passphrase for tests"
            )),
        );
    }
    if let Some(purpose) = purpose {
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), "{purpose}");
    }
    let read = |label: &str| {
        rpassword::prompt_password(label)
            .map(Passphrase::new)
            .map_err(|e| CliError::new(format!("cannot read the passphrase: {e}")))
    };
    let first = read("Passphrase: ")?;
    if confirm && read("Repeat passphrase: ")? != first {
        return Err(CliError::new("the passphrases do not match"));
    }
    Ok(first)
}
