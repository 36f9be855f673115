//! `aip-agent`: let an unmodified MCP client present AATs (the code is in the `aip_cli` library).

fn main() -> std::process::ExitCode {
    aip_cli::agent::main()
}
