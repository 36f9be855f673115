//! Shell completions and manual pages of the three programs, rendered by clap's generators
//! from the definitions they parse with:
//! - `aip-ca completions bash`, `aip-agent --completions bash` and `aip-proxy --completions
//!   bash` load in a real `bash` (`complete -p` names the program) and complete: the
//!   generated function, called as bash calls it, offers `serve` for `aip-ca se`, subcommands
//!   and flags of subcommands (`aip-ca agents re`, `aip-ca serve --log-f`), `--upstream` for
//!   `aip-agent --upst` and `--log-format` for `aip-proxy --log-f`; zsh, fish, elvish and
//!   PowerShell scripts are written and name the program; an unknown shell is refused. None
//!   of the flags a program otherwise requires (`--policy`, `--agent-dir`, …) is needed, even
//!   with settings in the environment.
//! - `aip-ca man --out DIR` writes `aip-ca.1`, `aip-agent.1`, `aip-proxy.1` and a page per
//!   subcommand, each a man page (`.TH`, NAME, SYNOPSIS), the programs' pages listing every
//!   subcommand; `man -l` (or groff) renders them when the machine has it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr)]

use std::path::Path;
use std::process::{Command, Output};

use aip_tests::{aip_agent, aip_ca, aip_proxy, isolated, ok};

/// The three programs and how each prints its completion script for `shell`.
fn completions(program: &str, shell: &str) -> Output {
    let mut cmd = match program {
        "aip-ca" => {
            let mut cmd = isolated(aip_ca());
            cmd.args(["completions", shell]);
            cmd
        }
        "aip-agent" => {
            let mut cmd = isolated(aip_agent());
            cmd.args(["--completions", shell]);
            cmd
        }
        "aip-proxy" => {
            let mut cmd = isolated(aip_proxy());
            cmd.args(["--completions", shell]);
            cmd
        }
        other => panic!("no program {other}"),
    };
    cmd.output().unwrap()
}

/// Runs `script` in `bash --norc`, with the completion script of `program` at `$1`; its
/// stdout.
fn in_bash(program: &str, script: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{program}.bash"));
    std::fs::write(&path, ok(completions(program, "bash"))).unwrap();
    let output = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", script, "bash"])
        .arg(&path)
        .output()
        .unwrap();
    ok(output)
}

/// The words bash's completion offers for the command line `words` (the last one being
/// completed), from the function `complete -p` names.
fn offered(program: &str, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let script = format!(
        r#"source "$1" || exit 1
spec=$(complete -p {program}) || exit 1
function=$(printf '%s\n' "$spec" | sed -n 's/.*-F \([^ ]*\).*/\1/p')
[ -n "$function" ] || {{ echo "no function in: $spec" >&2; exit 1; }}
COMP_WORDS=({words})
COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
COMP_LINE="${{COMP_WORDS[*]}}"
COMP_POINT=${{#COMP_LINE}}
COMP_TYPE=9
"$function" "{program}" "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}"
"#,
        words = quoted.join(" "),
    );
    in_bash(program, &script)
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn bash_loads_each_programs_completions() {
    for program in ["aip-ca", "aip-agent", "aip-proxy"] {
        let spec = in_bash(program, &format!("source \"$1\" && complete -p {program}"));
        assert!(spec.starts_with("complete "), "{program}: {spec}");
        assert!(spec.trim_end().ends_with(program), "{program}: {spec}");
    }
}

#[test]
fn bash_completes_subcommands_and_flags() {
    let ca = offered("aip-ca", &["aip-ca", "se"]);
    assert_eq!(ca, ["serve"], "aip-ca se");
    let ca = offered("aip-ca", &["aip-ca", "completions", ""]);
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        assert!(ca.iter().any(|w| w == shell), "aip-ca completions: {ca:?}");
    }
    let serve = offered("aip-ca", &["aip-ca", "serve", "--log-f"]);
    assert_eq!(serve, ["--log-format"], "aip-ca serve --log-f");
    let formats = offered("aip-ca", &["aip-ca", "serve", "--log-format", ""]);
    assert_eq!(formats, ["text", "json"], "aip-ca serve --log-format");
    let agents = offered("aip-ca", &["aip-ca", "agents", "re"]);
    assert_eq!(agents, ["reactivate", "revoke"], "aip-ca agents re");
    let list = offered("aip-ca", &["aip-ca", "access-token", "create", "--ro"]);
    assert_eq!(list, ["--role"], "aip-ca access-token create --ro");

    let agent = offered("aip-agent", &["aip-agent", "--upst"]);
    assert!(agent.iter().any(|w| w == "--upstream"), "aip-agent --upst: {agent:?}");
    assert!(
        agent.iter().all(|w| w.starts_with("--upst")),
        "aip-agent --upst: {agent:?}"
    );

    let proxy = offered("aip-proxy", &["aip-proxy", "--log-f"]);
    assert_eq!(proxy, ["--log-format"], "aip-proxy --log-f");
    let proxy = offered("aip-proxy", &["aip-proxy", "pol"]);
    assert_eq!(proxy, ["policy"], "aip-proxy pol");
    let proxy = offered("aip-proxy", &["aip-proxy", "policy", "s"]);
    assert_eq!(proxy, ["sign"], "aip-proxy policy s");
}

#[test]
fn other_shells_get_scripts_naming_the_program_and_unknown_shells_are_refused() {
    for program in ["aip-ca", "aip-agent", "aip-proxy"] {
        for shell in ["zsh", "fish", "elvish", "powershell"] {
            let script = ok(completions(program, shell));
            assert!(script.len() > 200, "{program} {shell}: {script}");
            assert!(script.contains(program), "{program} {shell}: {script}");
        }
        let zsh = ok(completions(program, "zsh"));
        assert!(zsh.starts_with(&format!("#compdef {program}")), "{program}: {zsh}");
        let fish = ok(completions(program, "fish"));
        assert!(fish.contains(&format!("complete -c {program} ")), "{program}: {fish}");
        let refused = completions(program, "tcsh");
        assert!(!refused.status.success(), "{program} tcsh");
        assert!(refused.stdout.is_empty(), "{program} tcsh");
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("tcsh"),
            "{program} tcsh"
        );
    }
}

#[test]
fn completions_need_none_of_the_programs_required_settings() {
    let proxy = isolated(aip_proxy())
        .args(["--completions", "bash"])
        .env("AIP_POLICY", "/nonexistent/policy.yaml")
        .env("AIP_LOG_FORMAT", "json")
        .output()
        .unwrap();
    assert!(ok(proxy).contains("-o default aip-proxy\n"));
    let agent = isolated(aip_agent())
        .args(["--completions", "bash"])
        .env("AIP_URL", "http://127.0.0.1:1")
        .env("AIP_LOG_FORMAT", "json")
        .output()
        .unwrap();
    assert!(ok(agent).contains("-o default aip-agent\n"));
    let agent = isolated(aip_agent())
        .args(["--audience", "a", "--", "cat"])
        .output()
        .unwrap();
    assert!(!agent.status.success(), "--agent-dir is required otherwise");
    let proxy = isolated(aip_proxy())
        .args(["--completions", "bash", "policy", "hash", "p.yaml"])
        .output()
        .unwrap();
    assert!(!proxy.status.success(), "--completions is not for a subcommand");
}

/// The text of the page `name` in `dir`.
fn page(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn aip_ca_man_writes_a_page_per_program_and_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man1");
    let printed = ok(isolated(aip_ca()).args(["man", "--out"]).arg(&out).output().unwrap());
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(printed.lines().count(), names.len(), "{printed}");

    let subcommands = [
        (
            "aip-ca",
            &[
                "init",
                "serve",
                "register-agent",
                "agents",
                "registration-token",
                "access-token",
                "users",
                "revoke",
                "token",
                "keys",
                "crl",
                "ca",
                "revocations",
                "audit",
                "backup",
                "restore",
                "keygen",
                "verify",
                "completions",
            ][..],
        ),
        ("aip-agent", &[][..]),
        ("aip-proxy", &["audit", "policy"][..]),
    ];
    for (program, subs) in subcommands {
        let text = page(&out, &format!("{program}.1"));
        assert!(text.contains(&format!(".TH {program} 1")), "{program}: {text}");
        assert!(text.contains(".SH NAME"), "{program}");
        assert!(text.contains(".SH SYNOPSIS"), "{program}");
        assert!(text.contains(".SH OPTIONS"), "{program}");
        for sub in subs {
            let listed = format!("{program}-{sub}(1)").replace('-', "\\-");
            assert!(text.contains(&listed), "{program} lists {sub}: {text}");
            let sub_page = format!("{program}-{sub}.1");
            assert!(names.contains(&sub_page), "{sub_page} in {names:?}");
            let sub_text = page(&out, &sub_page);
            assert!(
                sub_text.contains(".SH NAME") && sub_text.contains(".SH SYNOPSIS"),
                "{sub_page}"
            );
        }
    }
    for deeper in [
        "aip-ca-agents-list.1",
        "aip-ca-agents-revoke.1",
        "aip-ca-audit-verify.1",
        "aip-ca-ca-renew-issuing.1",
        "aip-proxy-policy-sign.1",
        "aip-proxy-audit-verify.1",
    ] {
        assert!(names.iter().any(|n| n == deeper), "{deeper} in {names:?}");
    }
    for left_out in ["aip-ca-man.1", "aip-ca-help.1", "aip-proxy-help.1"] {
        assert!(!names.iter().any(|n| n == left_out), "{left_out} written");
    }
    let serve = page(&out, "aip-ca-serve.1");
    assert!(serve.contains("log\\-format"), "{serve}");
    assert!(page(&out, "aip-agent.1").contains("completions"));
    assert!(page(&out, "aip-proxy.1").contains("completions"));

    // Rendered as a reader sees them, where the machine has a formatter.
    if Command::new("man")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        for name in ["aip-ca.1", "aip-agent.1", "aip-proxy.1", "aip-ca-serve.1"] {
            let rendered = Command::new("man")
                .arg("-l")
                .arg(out.join(name))
                .env("MANPAGER", "cat")
                .env("MANWIDTH", "100")
                .output()
                .unwrap();
            let text = ok(rendered);
            assert!(text.contains("NAME") && text.contains("SYNOPSIS"), "{name}: {text}");
        }
        let ca = ok(Command::new("man")
            .arg("-l")
            .arg(out.join("aip-ca.1"))
            .env("MANPAGER", "cat")
            .output()
            .unwrap());
        assert!(ca.contains("aip-ca-serve(1)"), "{ca}");
    } else {
        eprintln!("man is not installed: the pages' roff structure was checked, not their rendering");
    }
}
