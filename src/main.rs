#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    // kube's client and our server both use rustls; pin the process to one provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    pullsecret_injector::cli::main()
}
