//! Completion scripts and manual pages, rendered by clap's own generators from the clap
//! definitions the programs parse with: `aip-ca completions SHELL`, `aip-agent --completions
//! SHELL` (`aip-proxy --completions SHELL` is the proxy's), and `aip-ca man --out DIR`, which
//! writes the pages of all three programs and of each of their subcommands.

use std::path::{Path, PathBuf};

use clap_complete::Shell;

use crate::output::CliError;

/// Writes the completion script of `command` (the program `name`) for `shell` to stdout, as
/// `aip-proxy` writes its own.
pub(crate) fn print_completions(shell: Shell, command: clap::Command, name: &str) -> Result<(), CliError> {
    aip_proxy_verifier::cli::completions(shell, command, name, &mut std::io::stdout().lock())
        .map_err(|e| CliError::new(format!("cannot write output: {e}")))
}

/// Writes `NAME.1` for each of `programs` (`aip-ca man` gives the three) and
/// `NAME-SUB[-SUB…].1` for each of their subcommands (hidden ones and `help` left out) into
/// `dir`, created if missing; the files written.
pub(crate) fn write_pages(
    dir: &Path,
    programs: impl IntoIterator<Item = clap::Command>,
) -> Result<Vec<PathBuf>, CliError> {
    std::fs::create_dir_all(dir).map_err(|e| CliError::new(format!("cannot create {}: {e}", dir.display())))?;
    let mut written = Vec::new();
    for program in programs {
        let mut program = program.disable_help_subcommand(true);
        // Subcommands get their display names (`aip-ca-agents-list`) when built.
        program.build();
        write_tree(program, dir, &mut written)?;
    }
    Ok(written)
}

/// Writes the page of `command` and of each of its visible subcommands, depth first.
fn write_tree(command: clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> Result<(), CliError> {
    let page = clap_mangen::Man::new(command.clone());
    let path = page
        .generate_to(dir)
        .map_err(|e| CliError::new(format!("cannot write {}: {e}", dir.join(page.get_filename()).display())))?;
    written.push(path);
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_tree(sub.clone(), dir, written)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_program_and_visible_subcommand_gets_a_page() {
        let dir = tempfile::tempdir().unwrap();
        let programs = [
            crate::ca::command(),
            crate::agent::command(),
            aip_proxy_verifier::cli::command(),
        ];
        let written = write_pages(dir.path(), programs).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for expected in [
            "aip-ca.1",
            "aip-ca-serve.1",
            "aip-ca-agents-list.1",
            "aip-ca-completions.1",
            "aip-ca-audit-verify.1",
            "aip-agent.1",
            "aip-proxy.1",
            "aip-proxy-policy-sign.1",
        ] {
            assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
        }
        for hidden in ["aip-ca-man.1", "aip-ca-help.1"] {
            assert!(!names.iter().any(|n| n == hidden), "{hidden} written");
        }
        for path in &written {
            let page = std::fs::read_to_string(path).unwrap();
            assert!(page.contains(".TH "), "{}", path.display());
        }
    }
}
