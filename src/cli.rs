//! Command line: the commands (every flag also a `PSI_*` environment variable), and the two
//! small ones, `mutate` and `check-config`. Each other command's arguments live with the code
//! that runs it: [`crate::serve`], [`crate::secret`], and [`crate::logging`] for the global
//! flags.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use futures::FutureExt;

use crate::admission;
use crate::admission_policy::AdmissionPolicy;
use crate::check_pull::CheckPullArgs;
use crate::config::Config;
use crate::credentials::http::HttpClient;
use crate::credentials::{KeyRef, MintEnv, MintError};
use crate::logging::LogArgs;
use crate::match_condition::{IMAGE_CONDITION, ImageCondition, PER_CALL_LIMIT, match_conditions};
use crate::refresh::{CredentialArgs, mint_once};
use crate::secret::CreateSecretArgs;
use crate::serve::ServeArgs;

/// Injects imagePullSecrets into Pods for the private registries you list, and keeps the
/// pull Secrets present in every namespace labelled `pullsecret-injector.io/inject=enabled`.
#[derive(Debug, Parser)]
#[command(name = "pullsecret-injector", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the admission webhook (HTTPS) and, when a cluster is reachable, the Secret sync.
    ///
    /// With no --tls-cert/--tls-key it makes a self-signed certificate for localhost,
    /// 127.0.0.1 and ::1, and writes the CA to --self-signed-ca, so it runs on a laptop.
    Serve(Box<ServeArgs>),
    /// Print the patch the webhook would return for a Pod or an AdmissionReview (YAML or JSON).
    Mutate(MutateArgs),
    /// Validate a config file and print its rules and warnings.
    CheckConfig(CheckConfigArgs),
    /// Make a registry pull Secret (kubernetes.io/dockerconfigjson) from credentials.
    CreateSecret(CreateSecretArgs),
    /// Print configuration generated from the rules, for installs without the Helm chart.
    #[command(subcommand)]
    Render(Render),
    /// Tell whether the kubelet's pull of an image would work: the rule, the secret, the auth
    /// entry the kubelet would use, the registry's answer, and a verdict.
    CheckPull(CheckPullArgs),
    /// Mint a secret's credentials once from its credential source and print the resulting
    /// `.dockerconfigjson` (to test a setup by hand; the expiry goes to stderr).
    Token(TokenArgs),
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Registries config (YAML) with the secret's source in its `secrets:` map.
    #[arg(long, env = "PSI_CONFIG")]
    pub config: PathBuf,
    /// The secret to mint.
    pub secret: String,
    /// For gcpServiceAccountKey: read the key from this file instead of its Secret.
    #[arg(long, env = "PSI_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// For gcpServiceAccountKey without --key-file: the namespace of the key's Secret
    /// [default: the kubeconfig's namespace].
    #[arg(long, env = "PSI_NAMESPACE")]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub credentials: CredentialArgs,
}

#[derive(Debug, Subcommand)]
pub enum Render {
    /// The webhook's `matchConditions`: the API server then calls the webhook only for Pods
    /// with an image some rule may match (the chart renders the same list).
    MatchConditions(MatchConditionsArgs),
    /// A MutatingAdmissionPolicy and its binding (Kubernetes 1.36+) that decide exactly as the
    /// webhook: the API server then injects by itself, with no webhook in the path.
    AdmissionPolicy(AdmissionPolicyArgs),
}

#[derive(Debug, Args)]
pub struct AdmissionPolicyArgs {
    /// Registries config (YAML).
    #[arg(long, env = "PSI_CONFIG")]
    pub config: PathBuf,
    /// The injector's namespace, which the binding leaves out (as it leaves out kube-system).
    #[arg(long, env = "PSI_NAMESPACE", default_value = "pullsecret-injector")]
    pub namespace: String,
    /// What to print: two YAML documents, or a JSON `List` (both for `kubectl apply -f`).
    #[arg(long, short, env = "PSI_OUTPUT", value_enum, default_value_t = ManifestOutput::Yaml)]
    pub output: ManifestOutput,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ManifestOutput {
    Yaml,
    Json,
}

#[derive(Debug, Args)]
pub struct MatchConditionsArgs {
    /// Registries config (YAML).
    #[arg(long, env = "PSI_CONFIG")]
    pub config: PathBuf,
    /// What to print.
    #[arg(long, short, env = "PSI_OUTPUT", value_enum, default_value_t = RenderOutput::Yaml)]
    pub output: RenderOutput,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RenderOutput {
    /// The `matchConditions` list, to paste into a MutatingWebhookConfiguration's webhook.
    Yaml,
    /// The same list as JSON.
    Json,
    /// The image condition's CEL expression alone.
    Expression,
}

#[derive(Debug, Args)]
pub struct MutateArgs {
    /// Registries config (YAML).
    #[arg(long, env = "PSI_CONFIG")]
    pub config: PathBuf,
    /// What to print.
    #[arg(long, short, env = "PSI_OUTPUT", value_enum, default_value_t = MutateOutput::Patch)]
    pub output: MutateOutput,
    /// A Pod manifest or an AdmissionReview, YAML or JSON; `-` reads standard input.
    pub file: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MutateOutput {
    /// The JSON patch (an empty list when nothing is added).
    Patch,
    /// The Pod with the patch applied.
    Pod,
    /// The AdmissionReview answer, as the API server receives it.
    Review,
}

#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// Registries config (YAML).
    pub file: PathBuf,
    /// A copied secret's content, `NAME=FILE` (a Secret manifest or a `.dockerconfigjson`):
    /// warn about rules whose images it has no auth entry for. Repeatable.
    #[arg(long, env = "PSI_SECRET_FILE", value_name = "NAME=FILE")]
    pub secret_file: Vec<String>,
    /// Read every secret of the config from this namespace of the cluster, for the same
    /// warnings.
    #[arg(long, env = "PSI_NAMESPACE")]
    pub namespace: Option<String>,
}

/// Parses the command line and runs it, on the one async runtime of the process: `serve`'s
/// is multi-threaded (it serves and syncs at once), a one-shot command's is the current
/// thread.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::logging::init(&cli.log);
    let runtime = match cli.command {
        Command::Serve(_) => tokio::runtime::Builder::new_multi_thread(),
        _ => tokio::runtime::Builder::new_current_thread(),
    }
    .enable_all()
    .build();
    let result = match runtime {
        Ok(runtime) => runtime.block_on(run(cli.command)),
        Err(error) => Err(anyhow::Error::new(error).context("cannot start the async runtime")),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => crate::serve::run(*args).await,
        Command::Mutate(args) => mutate(&args),
        Command::CheckConfig(args) => check_config(&args).await,
        Command::CreateSecret(args) => crate::secret::run(&args).await,
        Command::Render(Render::MatchConditions(args)) => render_match_conditions(&args),
        Command::Render(Render::AdmissionPolicy(args)) => render_admission_policy(&args),
        Command::Token(args) => token(&args).await,
        Command::CheckPull(args) => crate::check_pull::run(&args).await,
    }
}

fn read_input(path: &Path) -> anyhow::Result<String> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read standard input")?;
        Ok(text)
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
    }
}

fn load_config(path: &Path) -> anyhow::Result<Config> {
    let (config, warnings) = Config::load(path)?;
    for w in warnings {
        tracing::warn!("{w}");
    }
    Ok(config)
}

fn mutate(args: &MutateArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(&args.config)?;
    let text = read_input(&args.file)?;
    let input: serde_json::Value = serde_yaml_ng::from_str(&text)
        .with_context(|| format!("{} is not YAML or JSON", args.file.display()))?;
    let (decision, out) = mutate_document(&config, input, args.output)?;
    let mut text = serde_json::to_string_pretty(&out)?;
    text.push('\n');
    std::io::stdout().write_all(text.as_bytes())?;
    // What the decision saw, for a person; stdout stays the document alone.
    let added = decision.added.join(",");
    eprintln!(
        "{}: {} image(s), {} of them image volume(s), {} matched a rule, {} invalid; added: {}",
        decision.outcome,
        decision.images,
        decision.image_volumes,
        decision.matched_images,
        decision.invalid_images.len(),
        if added.is_empty() { "none" } else { &added }
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs a Pod or an AdmissionReview document through the same decision as `POST /mutate`;
/// the decision and the document to print.
pub fn mutate_document(
    config: &Config,
    document: serde_json::Value,
    output: MutateOutput,
) -> anyhow::Result<(admission::Decision, serde_json::Value)> {
    let kind = document
        .get("kind")
        .and_then(|k| k.as_str())
        .unwrap_or_default();
    let review = match kind {
        admission::KIND => document,
        "Pod" => admission::review_for_pod(document),
        "" => bail!("the document has no `kind`: expected a Pod or an AdmissionReview"),
        other => bail!("expected a Pod or an AdmissionReview, got kind {other:?}"),
    };
    let decision = admission::review(config, &serde_json::to_vec(&review)?)?;
    let patch = decision.patch.clone().unwrap_or_default();
    let out = match output {
        MutateOutput::Patch => serde_json::to_value(&patch)?,
        MutateOutput::Review => serde_json::from_slice(&decision.to_review_bytes()?)?,
        MutateOutput::Pod => {
            let mut pod = review
                .pointer("/request/object")
                .cloned()
                .context("the AdmissionReview has no request.object")?;
            json_patch::patch(&mut pod, &patch).context("the patch does not apply to the Pod")?;
            pod
        }
    };
    Ok((decision, out))
}

async fn check_config(args: &CheckConfigArgs) -> anyhow::Result<ExitCode> {
    let (config, warnings) = match Config::load(&args.file) {
        Ok(loaded) => loaded,
        Err(error) => bail!("{}: {error}", args.file.display()),
    };
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}: {} rule(s), {} secret(s)",
        args.file.display(),
        config.rules().len(),
        config.secrets().len()
    )?;
    for (i, rule) in config.rules().iter().enumerate() {
        writeln!(out, "  {:>2}. {rule}", i + 1)?;
    }
    for secret in config.secrets() {
        match config.source(secret) {
            Some(source) => writeln!(out, "  secret {secret}: minted from {source}")?,
            None => writeln!(
                out,
                "  secret {secret}: copied from the Secret of that name"
            )?,
        }
    }
    // Listed only when configured: the Pods get the secrets either way.
    if !config.service_accounts().is_empty() {
        writeln!(
            out,
            "  serviceAccounts: {}",
            config.service_accounts().join(", ")
        )?;
    }
    // Policy mode decides as the webhook up to a number of images set by the rules' cost.
    let policy = AdmissionPolicy::new(&config);
    if policy.max_images > 0 {
        writeln!(
            out,
            "  policy mode (admission.mode: policy, Kubernetes 1.36+): decides as the webhook for Pods of up to {} containers and volumes; larger Pods get no secret",
            policy.max_images
        )?;
    }
    for w in &warnings {
        writeln!(out, "warning: {w}")?;
    }
    if policy.max_images == 0 {
        writeln!(
            out,
            "warning: {} rules are more than a MutatingAdmissionPolicy can check within the API server's cost limit: policy mode cannot be used, the webhook can",
            config.rules().len()
        )?;
    }
    let mut keyrings = Vec::new();
    for spec in &args.secret_file {
        let (name, file) = spec
            .split_once('=')
            .with_context(|| format!("--secret-file {spec:?}: expected NAME=FILE"))?;
        let text = std::fs::read(file).with_context(|| format!("cannot read {file}"))?;
        let ring = crate::check_pull::keyring_of_file(&text).with_context(|| file.to_owned())?;
        keyrings.push((name.to_owned(), ring));
    }
    if let Some(namespace) = &args.namespace {
        let names: Vec<&str> = config.secrets().iter().map(String::as_str).collect();
        keyrings.extend(crate::check_pull::keyrings_from_cluster(Some(namespace), &names).await?);
    }
    for (name, ring) in &keyrings {
        let keys = ring.keys().collect::<Vec<_>>().join(", ");
        for (i, rule) in config.rules().iter().enumerate() {
            if rule.secret() != name {
                continue;
            }
            match ring.covers(rule) {
                Some(true) => {}
                Some(false) => writeln!(
                    out,
                    "warning: rule {} ({}): secret {name} has no auths entry the kubelet would use for its images (keys: {}): the secret is injected and the pull is still anonymous",
                    i + 1,
                    rule.key(),
                    if keys.is_empty() { "none" } else { &keys }
                )?,
                None => writeln!(
                    out,
                    "note: rule {} ({}) has a glob host; check an image with check-pull",
                    i + 1,
                    rule.key()
                )?,
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn token(args: &TokenArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(&args.config)?;
    let minted = async {
        let http = HttpClient::new(std::time::Duration::from_secs(30))
            .context("cannot load the system's TLS roots")?;
        let key_file = args.key_file.clone();
        let namespace = args.namespace.clone();
        let read_key = move |key: &KeyRef| {
            let (key_file, namespace, key) = (key_file.clone(), namespace.clone(), key.clone());
            async move { read_key(key_file, namespace, key).await }.boxed()
        };
        let env = MintEnv {
            read_key: &read_key,
            http: &http,
            metadata_host: &args.credentials.gcp_metadata_host,
            plugin_timeout: args.credentials.credential_plugin_timeout,
        };
        mint_once(&config, &args.secret, &env)
            .await
            .map_err(anyhow::Error::from)
    }
    .await?;
    let mut out = minted.docker_config_json();
    out.push(b'\n');
    std::io::stdout().write_all(&out)?;
    eprintln!(
        "{}: {} registr{}, expires at {}",
        args.secret,
        minted.auths.len(),
        if minted.auths.len() == 1 { "y" } else { "ies" },
        humantime::format_rfc3339_seconds(minted.expires_at)
    );
    Ok(ExitCode::SUCCESS)
}

/// A service-account key from a file, or from its Secret through the kubeconfig.
async fn read_key(
    file: Option<PathBuf>,
    namespace: Option<String>,
    key: KeyRef,
) -> Result<Vec<u8>, MintError> {
    if let Some(file) = file {
        return std::fs::read(&file)
            .map_err(|e| MintError::Key(format!("cannot read {}: {e}", file.display())));
    }
    let fail = |e: String| MintError::Key(format!("{e} (or give --key-file)"));
    let client = kube::Client::try_default().await.map_err(|e| {
        fail(format!(
            "no cluster to read Secret {} from: {e}",
            key.secret
        ))
    })?;
    let api: kube::Api<k8s_openapi::api::core::v1::Secret> = match &namespace {
        Some(ns) => kube::Api::namespaced(client, ns),
        None => kube::Api::default_namespaced(client),
    };
    let secret = api
        .get(&key.secret)
        .await
        .map_err(|e| fail(format!("cannot read Secret {}: {e}", key.secret)))?;
    secret
        .data
        .and_then(|mut d| d.remove(&key.key))
        .map(|b| b.0)
        .ok_or_else(|| fail(format!("Secret {} has no key {:?}", key.secret, key.key)))
}

fn render_match_conditions(args: &MatchConditionsArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(&args.config)?;
    let condition = ImageCondition::new(&config);
    let list = match_conditions(&config);
    let text = match args.output {
        RenderOutput::Yaml => serde_yaml_ng::to_string(&list)?,
        RenderOutput::Json => serde_json::to_string_pretty(&list)? + "\n",
        RenderOutput::Expression => condition.expression.clone() + "\n",
    };
    std::io::stdout().write_all(text.as_bytes())?;
    // What the API server pays for it, for a person; stdout stays the document alone.
    eprintln!(
        "{IMAGE_CONDITION}: {} characters; worst-case cost {} of the API server's {PER_CALL_LIMIT} per expression; Pods with more than {} containers and volumes go to the webhook unexamined",
        condition.expression.len(),
        condition.worst_case_cost(),
        condition.max_images
    );
    Ok(ExitCode::SUCCESS)
}

fn render_admission_policy(args: &AdmissionPolicyArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(&args.config)?;
    let policy = AdmissionPolicy::new(&config);
    if policy.max_images == 0 {
        bail!(
            "{}: {} rules are more than a MutatingAdmissionPolicy can check within the API server's cost limit; use the webhook (admission.mode: webhook)",
            args.config.display(),
            config.rules().len()
        );
    }
    let [policy_doc, binding_doc] = policy.manifests(&args.namespace);
    let text = match args.output {
        ManifestOutput::Yaml => format!(
            "{}---\n{}",
            serde_yaml_ng::to_string(&policy_doc)?,
            serde_yaml_ng::to_string(&binding_doc)?
        ),
        ManifestOutput::Json => {
            let list = serde_json::json!({
                "apiVersion": "v1",
                "kind": "List",
                "items": [policy_doc, binding_doc],
            });
            serde_json::to_string_pretty(&list)? + "\n"
        }
    };
    std::io::stdout().write_all(text.as_bytes())?;
    eprintln!(
        "{}: worst-case cost {} of the API server's {PER_CALL_LIMIT} per expression; Pods with more than {} containers and volumes are not examined and get no secret",
        crate::admission_policy::POLICY_NAME,
        policy.worst_case_cost,
        policy.max_images
    );
    Ok(ExitCode::SUCCESS)
}
