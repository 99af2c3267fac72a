//! Tells the tests which outside tools this machine has, so a test that needs a missing one
//! is reported by `cargo test` as ignored, with the reason, instead of passing. Under CI
//! (`CI` set) the tools count as present: `.ci/run` installs them, and a missing one fails
//! its tests.

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

fn main() {
    for var in ["PATH", "CI", "KUBECONFIG"] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    println!("cargo::rerun-if-changed=build.rs");
    // A tool installed into a PATH directory changes that directory.
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths).filter(|d| d.is_dir()) {
            println!("cargo::rerun-if-changed={}", dir.display());
        }
    }
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
    for (tool, cfg) in [
        ("helm", "has_helm"),
        ("kubernetes-validate", "has_kubernetes_validate"),
        ("moto_server", "has_moto"),
        ("docker-registry", "has_registry"),
        ("htpasswd", "has_htpasswd"),
        ("promtool", "has_promtool"),
    ] {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        if ci || on_path(tool) {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
    // A Python module rather than a command: cel-cpp's bindings, for a second CEL interpreter.
    println!("cargo::rustc-check-cfg=cfg(has_cel_cpp)");
    let has_cel_cpp = std::process::Command::new("python3")
        .args(["-c", "import cel_expr_python"])
        .output()
        .is_ok_and(|out| out.status.success());
    if ci || has_cel_cpp {
        println!("cargo::rustc-cfg=has_cel_cpp");
    }
    println!("cargo::rustc-check-cfg=cfg(has_cluster)");
    if std::env::var_os("KUBECONFIG").is_some_and(|v| !v.is_empty()) {
        println!("cargo::rustc-cfg=has_cluster");
    }
}
