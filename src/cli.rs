//! Command line: arguments (every flag also a `PSI_*` environment variable) and the small
//! commands. `serve` lives in [`crate::serve`], `create-secret` in [`crate::secret`].

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::admission;
use crate::config::Config;
use crate::kube_client::KubeArgs;
use crate::secret::CreateSecretArgs;
use crate::server::Limits;
use crate::sync::SyncArgs;

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
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log format.
    #[arg(long, global = true, env = "PSI_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter, in tracing's EnvFilter syntax (`info`, `pullsecret_injector=debug`).
    #[arg(long, global = true, env = "PSI_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Registries config (YAML). Reloaded when it changes.
    #[arg(long, env = "PSI_CONFIG")]
    pub config: PathBuf,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Address of the HTTPS webhook port.
    #[arg(long, env = "PSI_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Address of the plain-HTTP metrics port (`GET /metrics`).
    #[arg(long, env = "PSI_METRICS_LISTEN", default_value = "0.0.0.0:9090")]
    pub metrics_listen: SocketAddr,
    /// Namespace holding the source Secrets [default: the pod's own namespace, else `default`].
    #[arg(long, env = "PSI_NAMESPACE")]
    pub namespace: Option<String>,
    /// Run the webhook only, without the Secret sync.
    #[arg(long, env = "PSI_NO_SYNC")]
    pub no_sync: bool,
    #[command(flatten)]
    pub sync: SyncArgs,
    #[command(flatten)]
    pub kube: KubeArgs,
    /// After SIGTERM, keep serving (unready) this long so load balancers and the API server
    /// stop sending new connections, before draining.
    #[arg(long, env = "PSI_SHUTDOWN_DELAY", default_value = "0s", value_parser = humantime::parse_duration)]
    pub shutdown_delay: Duration,
    /// Longest time to let in-flight requests finish once draining starts.
    #[arg(long, env = "PSI_SHUTDOWN_GRACE", default_value = "20s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// Largest AdmissionReview body accepted (bytes); larger ones get 413.
    #[arg(long, env = "PSI_MAX_BODY_BYTES", default_value_t = Limits::default().max_body_bytes)]
    pub max_body_bytes: usize,
    /// Time limit to receive a request body (the answer itself takes microseconds); slower
    /// bodies get 408.
    #[arg(long, env = "PSI_REQUEST_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// How often mounted files (config, certificates) are re-read, besides file events.
    #[arg(long, env = "PSI_RELOAD_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub reload_interval: Duration,
}

#[derive(Debug, Args)]
pub struct TlsArgs {
    /// PEM certificate chain, leaf first. Reloaded when it changes.
    #[arg(long, env = "PSI_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the certificate.
    #[arg(long, env = "PSI_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Where to write the CA of the self-signed certificate made when no --tls-cert is given
    /// [default: <temp dir>/pullsecret-injector/ca.crt].
    #[arg(long, env = "PSI_SELF_SIGNED_CA")]
    pub self_signed_ca: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct MutateArgs {
    /// Registries config (YAML).
    #[arg(long, env = "PSI_CONFIG")]
    pub config: PathBuf,
    /// What to print.
    #[arg(long, short, value_enum, default_value_t = MutateOutput::Patch)]
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
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::logging::init(&cli.log);
    let result = match cli.command {
        Command::Serve(args) => crate::serve::run(*args),
        Command::Mutate(args) => mutate(&args),
        Command::CheckConfig(args) => check_config(&args),
        Command::CreateSecret(args) => crate::secret::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
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
    let out = mutate_document(&config, input, args.output)?;
    let mut text = serde_json::to_string_pretty(&out)?;
    text.push('\n');
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// Runs a Pod or an AdmissionReview document through the same decision as `POST /mutate`.
pub fn mutate_document(
    config: &Config,
    document: serde_json::Value,
    output: MutateOutput,
) -> anyhow::Result<serde_json::Value> {
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
    let patch = decision.patch().unwrap_or_default();
    Ok(match output {
        MutateOutput::Patch => serde_json::to_value(&patch)?,
        MutateOutput::Review => serde_json::from_slice(&decision.to_review_bytes())?,
        MutateOutput::Pod => {
            let mut pod = review
                .pointer("/request/object")
                .cloned()
                .context("the AdmissionReview has no request.object")?;
            json_patch::patch(&mut pod, &patch).context("the patch does not apply to the Pod")?;
            pod
        }
    })
}

fn check_config(args: &CheckConfigArgs) -> anyhow::Result<ExitCode> {
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
    for w in &warnings {
        writeln!(out, "warning: {w}")?;
    }
    Ok(ExitCode::SUCCESS)
}
