//! The binary's commands, run as a user runs them.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use base64::Engine as _;
use clap::{ArgAction, CommandFactory};
use common::data_path;
use pullsecret_injector::cli::Cli;
use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pullsecret-injector"))
}

fn run(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = bin()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary runs");
    let mut input = child.stdin.take().unwrap();
    // A command that refuses its arguments exits without reading: a broken pipe is fine.
    let _ = input.write_all(stdin.unwrap_or_default());
    drop(input);
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn example_config() -> String {
    format!("{}/examples/config.yaml", env!("CARGO_MANIFEST_DIR"))
}

fn data(name: &str) -> String {
    data_path(name).display().to_string()
}

#[test]
fn create_secret_matches_kubectl_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("password");
    std::fs::write(&password, "s3cr<t&>\n").unwrap();
    let out = run(
        &[
            "create-secret",
            "--name",
            "gar-pull",
            "--server",
            "asia-northeast1-docker.pkg.dev",
            "--username",
            "robot",
            "--password-file",
            password.to_str().unwrap(),
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        std::fs::read_to_string(data_path("secrets/basic.yaml")).unwrap()
    );
    assert!(
        !stderr(&out).contains("s3cr"),
        "password echoed: {}",
        stderr(&out)
    );

    // The same from standard input.
    let out = run(
        &[
            "create-secret",
            "--name",
            "gar-pull",
            "--server",
            "asia-northeast1-docker.pkg.dev",
            "--username",
            "robot",
            "--password-stdin",
        ],
        Some(b"s3cr<t&>\n"),
    );
    assert_eq!(
        stdout(&out),
        std::fs::read_to_string(data_path("secrets/basic.yaml")).unwrap()
    );
}

#[test]
fn create_secret_with_a_gcp_key_for_two_registries() {
    let out = run(
        &[
            "create-secret",
            "--name",
            "gar-pull",
            "--namespace",
            "pullsecret-injector",
            "--server",
            "gcr.io",
            "--server",
            "europe-docker.pkg.dev",
            "--gcp-json-key",
            &data("secrets/gcp-key.json"),
            "-o",
            "json",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        std::fs::read_to_string(data_path("secrets/gcp.json")).unwrap()
    );

    // And the auth field decodes back to `_json_key:<key>`.
    let secret: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let config: Value = serde_json::from_slice(
        &b64.decode(secret["data"][".dockerconfigjson"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let key = std::fs::read_to_string(data_path("secrets/gcp-key.json")).unwrap();
    for server in ["gcr.io", "europe-docker.pkg.dev"] {
        let entry = &config["auths"][server];
        assert_eq!(entry["username"], "_json_key");
        assert_eq!(entry["password"], key.trim_end());
        let auth = String::from_utf8(b64.decode(entry["auth"].as_str().unwrap()).unwrap()).unwrap();
        assert_eq!(auth, format!("_json_key:{}", key.trim_end()));
    }
}

#[test]
fn create_secret_refuses_bad_arguments() {
    let cases: [&[&str]; 5] = [
        &["create-secret", "--name", "x", "--server", "ghcr.io"],
        &[
            "create-secret",
            "--name",
            "x",
            "--server",
            "ghcr.io",
            "--username",
            "u",
        ],
        &[
            "create-secret",
            "--name",
            "Bad_Name",
            "--server",
            "ghcr.io",
            "--username",
            "u",
            "--password-stdin",
        ],
        &[
            "create-secret",
            "--name",
            "x",
            "--username",
            "u",
            "--password-stdin",
        ],
        &[
            "create-secret",
            "--name",
            "x",
            "--server",
            "ghcr.io",
            "--gcp-json-key",
            "/nonexistent/key.json",
        ],
    ];
    for args in cases {
        let out = run(args, Some(b"pw\n"));
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(!stderr(&out).is_empty());
        assert!(stdout(&out).is_empty(), "{args:?} printed a manifest");
    }
    // A file that is not a key.
    let out = run(
        &[
            "create-secret",
            "--name",
            "x",
            "--server",
            "gcr.io",
            "--gcp-json-key",
            &example_config(),
        ],
        None,
    );
    assert!(
        stderr(&out).contains("not a JSON key file"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn mutate_counts_image_volumes() {
    let review = data("image-volume-pod.json");
    let out = run(
        &[
            "mutate",
            "--config",
            &example_config(),
            "-o",
            "pod",
            &review,
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let pod: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        pod["spec"]["imagePullSecrets"],
        serde_json::json!([{ "name": "gar-pull" }])
    );
    assert!(
        stderr(&out).contains("2 image(s), 1 of them image volume(s), 1 matched a rule"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn mutate_prints_patch_pod_and_review() {
    let review = data("deployment-pod.json");
    let out = run(&["mutate", "--config", &example_config(), &review], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let patch: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(
        stderr(&out).contains(
            "patched: 3 image(s), 0 of them image volume(s), 3 matched a rule, 0 invalid; added: gar-pull,dockerhub"
        ),
        "{}",
        stderr(&out)
    );
    assert_eq!(patch[0]["path"], "/spec/imagePullSecrets");
    assert_eq!(
        patch[0]["value"],
        serde_json::json!([{ "name": "gar-pull" }, { "name": "dockerhub" }])
    );

    let out = run(
        &[
            "mutate",
            "--config",
            &example_config(),
            "--output",
            "pod",
            &review,
        ],
        None,
    );
    let pod: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(pod["kind"], "Pod");
    assert_eq!(pod["spec"]["imagePullSecrets"][1]["name"], "dockerhub");

    let out = run(
        &[
            "mutate",
            "--config",
            &example_config(),
            "-o",
            "review",
            &review,
        ],
        None,
    );
    let answer: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        answer["response"]["uid"],
        "bf1d8bee-677e-4b16-94b4-17e425478863"
    );
    assert_eq!(answer["response"]["patchType"], "JSONPatch");
}

#[test]
fn mutate_reads_a_yaml_pod_from_stdin() {
    let pod = b"apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n    - name: c\n      image: ghcr.io/acme/api:1\n  imagePullSecrets:\n    - name: mine\n";
    let out = run(
        &["mutate", "--config", &example_config(), "-o", "pod", "-"],
        Some(pod),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let pod: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        pod["spec"]["imagePullSecrets"],
        serde_json::json!([{ "name": "mine" }, { "name": "ghcr-acme" }])
    );
    assert_eq!(
        pod["metadata"]["annotations"]["pullsecret-injector.io/injected"],
        "ghcr-acme"
    );

    let nothing = b"kind: Pod\nspec:\n  containers:\n    - image: quay.io/x/y\n";
    let out = run(
        &["mutate", "--config", &example_config(), "-"],
        Some(nothing),
    );
    assert_eq!(stdout(&out).trim(), "[]");
}

#[test]
fn mutate_refuses_other_documents() {
    let out = run(
        &["mutate", "--config", &example_config(), "-"],
        Some(b"kind: Deployment\n"),
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("expected a Pod or an AdmissionReview"),
        "{}",
        stderr(&out)
    );
    let out = run(
        &["mutate", "--config", &example_config(), "-"],
        Some(b"{not yaml"),
    );
    assert!(!out.status.success());
    let out = run(
        &["mutate", "--config", &example_config(), "-"],
        Some(b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\"}"),
    );
    assert!(stderr(&out).contains("no request"), "{}", stderr(&out));
}

#[test]
fn check_config_prints_rules_and_warnings() {
    let out = run(&["check-config", &example_config()], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("5 rule(s), 4 secret(s)"), "{text}");
    assert!(text.contains("2. *.pkg.dev -> gar-pull"), "{text}");
    assert!(!text.contains("warning"), "{text}");
    assert!(
        !text.contains("serviceAccounts"),
        "none configured, none listed: {text}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(
        &file,
        "registries:\n  - match: https://index.docker.io/v1/\n    secret: hub\n",
    )
    .unwrap();
    let out = run(&["check-config", file.to_str().unwrap()], None);
    assert!(out.status.success());
    assert!(
        stdout(&out).contains("1. docker.io -> hub"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("warning: rule 1 (match \"https://index.docker.io/v1/\"): the https:// scheme is ignored"), "{}", stdout(&out));

    std::fs::write(&file, "registries:\n  - match: ghcr.io\n    secret: ok\n  - match: ghcr.io:http\n    secret: bad\n").unwrap();
    let out = run(&["check-config", file.to_str().unwrap()], None);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("rule 2 (match \"ghcr.io:http\"): port \"http\" is not a number"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn check_config_lists_the_service_accounts_in_config_order() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(
        &file,
        "registries:\n  - match: ghcr.io\n    secret: ghcr\nserviceAccounts: [default, builder]\n",
    )
    .unwrap();
    let out = run(&["check-config", file.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.lines()
            .any(|l| l.trim() == "serviceAccounts: default, builder"),
        "{text}"
    );

    // A bad name is refused with the config's own error, not listed.
    std::fs::write(
        &file,
        "registries:\n  - match: ghcr.io\n    secret: ghcr\nserviceAccounts: [default, Builder_1]\n",
    )
    .unwrap();
    let out = run(&["check-config", file.to_str().unwrap()], None);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("serviceAccounts:"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("Builder_1"), "{}", stderr(&out));
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
}

/// Every command of the binary as clap declares it, by its path of names from the binary
/// (`[]` is the binary itself, `["render", "match-conditions"]` a nested one), parents first.
fn command_tree() -> Vec<(Vec<String>, clap::Command)> {
    fn walk(
        command: &clap::Command,
        path: Vec<String>,
        out: &mut Vec<(Vec<String>, clap::Command)>,
    ) {
        out.push((path.clone(), command.clone()));
        for sub in command.get_subcommands() {
            let mut sub_path = path.clone();
            sub_path.push(sub.get_name().to_owned());
            walk(sub, sub_path, out);
        }
    }
    let mut out = Vec::new();
    walk(&<Cli as CommandFactory>::command(), Vec::new(), &mut out);
    out
}

/// The command's own flags: positional arguments and clap's --help/--version left out.
fn flags(command: &clap::Command) -> impl Iterator<Item = &clap::Arg> {
    command.get_arguments().filter(|arg| {
        !arg.is_positional()
            && !matches!(
                arg.get_action(),
                ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
            )
    })
}

fn command_line(path: &[String]) -> String {
    std::iter::once("pullsecret-injector")
        .chain(path.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `--secret-file` -> `PSI_SECRET_FILE`.
fn variable_of(long: &str) -> String {
    format!("PSI_{}", long.to_uppercase().replace('-', "_"))
}

#[test]
fn every_flag_has_its_psi_variable() {
    let mut seen = Vec::new();
    let mut wrong = Vec::new();
    for (path, command) in command_tree() {
        for arg in flags(&command) {
            let Some(long) = arg.get_long() else {
                wrong.push(format!(
                    "{}: {} has no long name",
                    command_line(&path),
                    arg.get_id()
                ));
                continue;
            };
            let flag = format!("{} --{long}", command_line(&path));
            let expected = variable_of(long);
            match arg.get_env().and_then(|v| v.to_str()) {
                None => wrong.push(format!("{flag}: no environment variable (want {expected})")),
                Some(env) if env != expected => {
                    wrong.push(format!("{flag}: {env}, want {expected}"))
                }
                Some(_) => {}
            }
            seen.push(flag);
        }
    }
    // The walk reaches global, flattened and nested commands' flags.
    for flag in [
        "pullsecret-injector --log-level",
        "pullsecret-injector serve --tls-cert",
        "pullsecret-injector render match-conditions --output",
        "pullsecret-injector check-pull --secret-file",
    ] {
        assert!(
            seen.iter().any(|f| f == flag),
            "{flag} not walked: {seen:?}"
        );
    }
    assert!(
        wrong.is_empty(),
        "flags without their PSI_* variable:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn help_explains_every_command() {
    let tree = command_tree();
    assert!(tree.len() >= 9, "{} commands", tree.len());
    for (path, command) in &tree {
        let mut help = bin();
        help.args(path).arg("--help");
        // A PSI_* variable of the caller would show its value in the help.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("PSI_") {
                help.env_remove(name);
            }
        }
        let out = help.output().unwrap();
        let line = command_line(path);
        assert!(out.status.success(), "{line} --help: {}", stderr(&out));
        let text = stdout(&out);
        let usage = format!("Usage: {line}");
        assert!(
            text.lines()
                .any(|l| l == usage || l.starts_with(&format!("{usage} "))),
            "{line} --help has no usage line naming it:\n{text}"
        );
        for sub in command.get_subcommands() {
            assert!(
                text.contains(&format!("  {}", sub.get_name())),
                "{line} --help does not list {}:\n{text}",
                sub.get_name()
            );
        }
        for arg in flags(command).filter(|a| !a.is_hide_set()) {
            let long = arg.get_long().unwrap_or_default();
            assert!(
                text.contains(&format!("--{long}")),
                "{line} --help lacks --{long}:\n{text}"
            );
            if !arg.is_hide_env_set() {
                let variable = format!("{}=", variable_of(long));
                assert!(
                    text.contains(&variable),
                    "{line} --help does not name {variable}:\n{text}"
                );
            }
        }
    }
}

#[test]
fn create_secret_takes_every_argument_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("password");
    std::fs::write(&password, "s3cr<t&>\n").unwrap();
    let out = bin()
        .arg("create-secret")
        .env("PSI_NAME", "gar-pull")
        .env("PSI_SERVER", "asia-northeast1-docker.pkg.dev")
        .env("PSI_USERNAME", "robot")
        .env("PSI_PASSWORD_FILE", &password)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        std::fs::read_to_string(data_path("secrets/basic.yaml")).unwrap()
    );

    // Several servers in one variable, and the output format.
    let out = bin()
        .arg("create-secret")
        .env("PSI_NAME", "gar-pull")
        .env("PSI_NAMESPACE", "pullsecret-injector")
        .env("PSI_SERVER", "gcr.io,europe-docker.pkg.dev")
        .env("PSI_GCP_JSON_KEY", data("secrets/gcp-key.json"))
        .env("PSI_OUTPUT", "json")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        std::fs::read_to_string(data_path("secrets/gcp.json")).unwrap()
    );

    // A flag still wins over its variable.
    let out = bin()
        .args(["create-secret", "--output", "json"])
        .env("PSI_NAME", "gar-pull")
        .env("PSI_SERVER", "asia-northeast1-docker.pkg.dev")
        .env("PSI_USERNAME", "robot")
        .env("PSI_PASSWORD_FILE", &password)
        .env("PSI_OUTPUT", "yaml")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let secret: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(secret["metadata"]["name"], "gar-pull");
}

#[test]
fn render_match_conditions_prints_what_the_library_builds() {
    use pullsecret_injector::match_condition::{
        IMAGE_CONDITION, MIRROR_CONDITION, match_conditions,
    };
    let config = common::example_config();
    let expected = serde_json::to_value(match_conditions(&config)).unwrap();

    let yaml = run(
        &["render", "match-conditions", "--config", &example_config()],
        None,
    );
    assert!(yaml.status.success(), "{}", stderr(&yaml));
    let parsed: Value = serde_yaml_ng::from_str(&stdout(&yaml)).unwrap();
    assert_eq!(parsed, expected);
    assert_eq!(parsed[0]["name"], MIRROR_CONDITION);
    assert_eq!(parsed[1]["name"], IMAGE_CONDITION);
    // The cost summary goes to stderr, so stdout pastes as it is.
    assert!(
        stderr(&yaml).contains("worst-case cost"),
        "{}",
        stderr(&yaml)
    );

    let json = run(
        &[
            "render",
            "match-conditions",
            "--config",
            &example_config(),
            "-o",
            "json",
        ],
        None,
    );
    assert_eq!(
        serde_json::from_str::<Value>(&stdout(&json)).unwrap(),
        expected
    );

    let expression = run(
        &[
            "render",
            "match-conditions",
            "--config",
            &example_config(),
            "-o",
            "expression",
        ],
        None,
    );
    assert_eq!(stdout(&expression).trim_end(), expected[1]["expression"]);

    let broken = run(
        &[
            "render",
            "match-conditions",
            "--config",
            "/nonexistent.yaml",
        ],
        None,
    );
    assert!(!broken.status.success());
    assert!(
        stderr(&broken).contains("/nonexistent.yaml"),
        "{}",
        stderr(&broken)
    );
}

#[test]
fn token_mints_once_from_a_credential_provider_and_check_config_names_sources() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    let plugin = format!(
        "{}/tests/plugins/good-provider.sh",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::write(
        &config,
        format!(
            "registries:\n  - match: ghcr.io/acme\n    secret: ghcr-acme\n  - match: quay.io\n    secret: quay\nsecrets:\n  ghcr-acme:\n    credentialProvider: {{command: {plugin}, env: {{CACHE: 2h0m0s}}}}\n"
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let out = run(&["token", "--config", config, "ghcr-acme"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let minted: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(minted["auths"]["ghcr.io"]["username"], "plugin-user");
    assert!(stderr(&out).contains("expires at"), "{}", stderr(&out));
    // The password goes to stdout only, never stderr.
    let password = minted["auths"]["ghcr.io"]["password"].as_str().unwrap();
    assert!(!stderr(&out).contains(password));

    let copied = run(&["token", "--config", config, "quay"], None);
    assert!(!copied.status.success());
    assert!(
        stderr(&copied).contains("no credential source for \"quay\""),
        "{}",
        stderr(&copied)
    );

    let check = run(&["check-config", config], None);
    let text = stdout(&check);
    assert!(
        text.contains(&format!(
            "secret ghcr-acme: minted from credentialProvider ({plugin})"
        )),
        "{text}"
    );
    assert!(
        text.contains("secret quay: copied from the Secret of that name"),
        "{text}"
    );
}

#[test]
fn check_config_warns_when_a_secret_has_no_entry_for_its_rule() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "registries:\n  - match: ghcr.io/acme\n    secret: ghcr\n  - match: asia-northeast1-docker.pkg.dev\n    secret: gar\n  - match: \"*.pkg.dev\"\n    secret: gar\n  - match: docker.io\n    secret: hub\n",
    )
    .unwrap();
    let ghcr = dir.path().join("ghcr.json");
    // The classic: the key names another registry.
    std::fs::write(
        &ghcr,
        r#"{"auths":{"https://ghcr.io/v2/other":{"auth":"dTpw"}}}"#,
    )
    .unwrap();
    let gar = dir.path().join("gar.json");
    std::fs::write(
        &gar,
        r#"{"auths":{"asia-northeast1-docker.pkg.dev":{"auth":"dTpw"}}}"#,
    )
    .unwrap();
    let hub = dir.path().join("hub.json");
    std::fs::write(
        &hub,
        r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"}}}"#,
    )
    .unwrap();
    let out = run(
        &[
            "check-config",
            config.to_str().unwrap(),
            "--secret-file",
            &format!("ghcr={}", ghcr.display()),
            "--secret-file",
            &format!("gar={}", gar.display()),
            "--secret-file",
            &format!("hub={}", hub.display()),
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("warning: rule 1 (ghcr.io/acme): secret ghcr has no auths entry the kubelet would use for its images (keys: https://ghcr.io/v2/other)"),
        "{text}"
    );
    assert!(!text.contains("rule 2 (asia"), "covered: {text}");
    assert!(
        text.contains("note: rule 3 (*.pkg.dev) has a glob host"),
        "{text}"
    );
    assert!(
        !text.contains("rule 4"),
        "the legacy Docker Hub key covers docker.io: {text}"
    );
}

#[test]
fn check_commands_without_a_cluster_say_so() {
    for args in [
        vec!["check-config", "--namespace", "team-a"],
        vec![
            "check-pull",
            "ghcr.io/acme/api:1",
            "--namespace",
            "team-a",
            "--config",
        ],
    ] {
        let mut command = bin();
        command
            .args(&args)
            .arg(example_config())
            .env("KUBECONFIG", "/nonexistent/kubeconfig");
        command.env_remove("KUBERNETES_SERVICE_HOST");
        let out = command.output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?}: the check itself failed"
        );
        assert!(
            stderr(&out).contains("no cluster to read the secrets from"),
            "{}",
            stderr(&out)
        );
    }
}

/// `create-secret --from-docker-config` with a config as `docker login` leaves it on a laptop:
/// a `credsStore`, `credHelpers` per registry, and plain `auths`; the helpers are scripts in
/// tests/plugins on PATH that answer, hold nothing, or hang.
#[test]
fn create_secret_from_a_docker_config_and_its_credential_helpers() {
    let b64 = base64::engine::general_purpose::STANDARD;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        serde_json::json!({
            "auths": {
                "ghcr.io": {},
                "https://index.docker.io/v1/": { "auth": b64.encode("hub-user:hub-passw0rd") },
                "quay.io": { "auth": b64.encode("quay-user:quay-passw0rd") },
            },
            "credsStore": "psi-test",
            "credHelpers": {
                "fail.example.io": "psi-fail",
                "hang.example.io": "psi-hang",
            },
        })
        .to_string(),
    )
    .unwrap();
    let secrets = [
        "helper-s3cret",
        "hub-passw0rd",
        "quay-passw0rd",
        "refresh-t0ken",
    ];
    let path = format!(
        "{}/tests/plugins:{}",
        env!("CARGO_MANIFEST_DIR"),
        std::env::var("PATH").unwrap_or_default()
    );
    let create = |servers: &[&str], extra: &[&str], docker_config_dir: Option<&std::path::Path>| {
        let mut command = bin();
        command
            .args(["create-secret", "--name", "laptop", "-o", "json"])
            .args(extra)
            .env("PATH", &path)
            .env_remove("DOCKER_CONFIG");
        if let Some(dir) = docker_config_dir {
            command
                .env("DOCKER_CONFIG", dir)
                .arg("--from-docker-config");
        } else {
            command.arg("--from-docker-config").arg(&config);
        }
        for server in servers {
            command.args(["--server", server]);
        }
        let started = std::time::Instant::now();
        let out = command.output().unwrap();
        (out, started.elapsed())
    };
    let no_secret_in_messages = |out: &Output| {
        for secret in secrets {
            assert!(!stderr(out).contains(secret), "{secret} in {}", stderr(out));
        }
    };

    // The store answers for ghcr.io; it has nothing for Docker Hub, whose auths entry counts.
    // quay.io is not named, so not in the Secret.
    let (out, _) = create(&["ghcr.io", "docker.io"], &[], None);
    assert!(out.status.success(), "{}", stderr(&out));
    no_secret_in_messages(&out);
    for secret in secrets {
        assert!(!stdout(&out).contains(secret), "{secret} in plain text");
    }
    let manifest: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let data = b64
        .decode(manifest["data"][".dockerconfigjson"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        String::from_utf8(data).unwrap(),
        pullsecret_injector::credentials::docker_config_json([
            ("ghcr.io", "helper-robot", "helper-s3cret"),
            ("docker.io", "hub-user", "hub-passw0rd"),
        ])
    );

    // $DOCKER_CONFIG/config.json when no FILE is given.
    let (out, _) = create(&["quay.io"], &[], Some(dir.path()));
    assert!(out.status.success(), "{}", stderr(&out));
    let manifest: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let data = b64
        .decode(manifest["data"][".dockerconfigjson"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        String::from_utf8(data).unwrap(),
        pullsecret_injector::credentials::docker_config_json([(
            "quay.io",
            "quay-user",
            "quay-passw0rd"
        )])
    );

    // Each server must resolve; the error names the one that does not, and nothing is printed.
    for (server, said) in [
        (
            "fail.example.io",
            "docker-credential-psi-fail has no credentials",
        ),
        (
            "nowhere.example.io",
            "docker-credential-psi-test has no credentials",
        ),
        ("acr.example.io", "identity token"),
    ] {
        let (out, _) = create(&["ghcr.io", server], &[], None);
        assert!(!out.status.success(), "{server}");
        assert!(stdout(&out).is_empty(), "{server}: {}", stdout(&out));
        assert!(
            stderr(&out).contains(&format!("--server {server}")) && stderr(&out).contains(said),
            "{server}: {}",
            stderr(&out)
        );
        no_secret_in_messages(&out);
    }

    // A helper that hangs is killed at the time limit.
    let (out, took) = create(&["hang.example.io"], &["--helper-timeout", "1s"], None);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--server hang.example.io")
            && stderr(&out).contains("docker-credential-psi-hang gave no answer within 1s"),
        "{}",
        stderr(&out)
    );
    assert!(took < std::time::Duration::from_secs(8), "took {took:?}");

    // It is one way to give credentials, not an addition to the others.
    let (out, _) = create(&["ghcr.io"], &["--username", "u", "--password-stdin"], None);
    assert!(!out.status.success());
    assert!(stdout(&out).is_empty());
}
