//! `certs-scripts/gen-certs.sh` for a webhook reached at an IP (the chart on the host
//! network), its TLS Secret created in a namespace: run with a stand-in `kubectl` on `PATH`
//! that records the calls it gets, since there is no cluster here. (`tests/chart.rs` covers the
//! certificates' SANs for the Service and the server serving them.)

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("certs-scripts/gen-certs.sh")
}

/// A `kubectl` that appends its arguments to `calls` and keeps what `apply -f -` reads.
fn fake_kubectl(bin: &Path) {
    std::fs::create_dir_all(bin).unwrap();
    let path = bin.join("kubectl");
    std::fs::write(
        &path,
        r#"#!/bin/sh
dir=$(dirname "$0")
echo "$*" >> "$dir/calls"
case " $* " in
  *" apply "*) cat > "$dir/applied" ;;
  *) printf 'apiVersion: v1\nkind: Secret\nmetadata:\n  name: from-create\n' ;;
esac
"#,
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn run(bin: &Path, args: &[&str]) -> Output {
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new("bash")
        .arg(script())
        .args(args)
        .env("PATH", path)
        .output()
        .unwrap()
}

fn subject_alt_names(cert: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(cert)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_host_ip_with_a_secret_in_a_namespace_is_made_and_applied_there() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    fake_kubectl(&bin);
    let out_dir = dir.path().join("certs");
    let out = run(
        &bin,
        &[
            "--host",
            "127.0.0.1",
            "--create-secret",
            "psi-tls",
            "--namespace",
            "psi",
            "--out",
            out_dir.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "refused: {stderr}");
    // The SAN is the IP, and only it: no Service names.
    let sans = subject_alt_names(&out_dir.join("tls.crt"));
    assert!(sans.contains("IP Address:127.0.0.1"), "{sans}");
    assert!(!sans.contains("DNS:"), "{sans}");
    // The Secret went to the namespace, with the files just written, through apply.
    // The two ends of the script's `create | apply` pipe run at once: in either order.
    let calls = std::fs::read_to_string(bin.join("calls")).unwrap();
    let mut lines: Vec<&str> = calls.lines().collect();
    lines.sort_by_key(|l| l.starts_with("apply"));
    assert_eq!(lines.len(), 2, "{calls}");
    assert!(
        lines[0].starts_with("-n psi create secret generic psi-tls --type=kubernetes.io/tls"),
        "{calls}"
    );
    for file in ["tls.crt", "tls.key", "ca.crt"] {
        let from = format!("--from-file={file}={}", out_dir.join(file).display());
        assert!(lines[0].contains(&from), "{from} not in {calls}");
    }
    assert_eq!(lines[1], "apply -f -", "{calls}");
    assert!(
        std::fs::read_to_string(bin.join("applied"))
            .unwrap()
            .contains("kind: Secret")
    );
    // Standard output is the caBundle alone.
    let bundle = String::from_utf8(out.stdout).unwrap();
    assert!(!bundle.trim().is_empty() && !bundle.trim().contains(char::is_whitespace));
}

#[test]
fn the_namespace_rules_that_still_hold() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    fake_kubectl(&bin);
    let out_dir = dir.path().join("certs");
    let out_dir = out_dir.to_str().unwrap();
    for bad in [
        // A Service without its namespace names no DNS name the API server calls.
        &["--service", "x", "--out", out_dir][..],
        &[
            "--host",
            "127.0.0.1",
            "--namespace",
            "Bad_NS",
            "--out",
            out_dir,
        ],
        // A namespace alone is no SAN.
        &["--namespace", "psi", "--out", out_dir],
        // A Secret needs a namespace to go to.
        &[
            "--host",
            "127.0.0.1",
            "--create-secret",
            "s",
            "--out",
            out_dir,
        ],
    ] {
        let refused = run(&bin, bad);
        assert_eq!(refused.status.code(), Some(2), "{bad:?}");
        assert!(refused.stdout.is_empty(), "{bad:?}");
    }
    assert!(!Path::new(out_dir).exists(), "a refused run wrote files");
    assert!(!bin.join("calls").exists(), "a refused run called kubectl");
}
