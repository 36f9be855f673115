//! `aip-ca`: operate the AIP identity authority (the code is in the `aip_cli` library).

fn main() -> std::process::ExitCode {
    aip_cli::ca::main()
}
