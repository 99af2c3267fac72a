//! pullsecret-injector: a Kubernetes mutating admission webhook that adds the right
//! `imagePullSecrets` to Pods, and a sync that keeps those Secrets present in every opted-in
//! namespace. See `DESIGN.md` in the docs for the contract.

#![forbid(unsafe_code)]

pub mod admission;
pub mod admission_policy;
pub mod check_pull;
pub mod cli;
pub mod config;
pub mod credential_check;
pub mod credentials;
pub mod image;
pub mod keyring;
pub mod kube_client;
pub mod leader;
pub mod logging;
pub mod match_condition;
pub mod metrics;
pub mod names;
pub mod refresh;
pub mod registry;
pub mod repair;
pub mod rules;
pub mod secret;
pub mod serve;
pub mod server;
pub mod supervise;
pub mod sync;
pub mod tls;
pub mod watch;
