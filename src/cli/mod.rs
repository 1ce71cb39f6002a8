//! The command line: `run` (the operator), `crdgen`, `token` helpers for
//! people, `version` and `completion`. Installed as `kubectl-tokensmith`
//! it is also a kubectl plugin (`kubectl tokensmith token show ...`).

mod failure;
mod run;
pub mod runtime;
mod token;

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use kube::{Client, Config, config::KubeConfigOptions};

pub use failure::Failure;

/// tokensmith: API access tokens declared as Kubernetes resources.
#[derive(Parser)]
#[command(
    version,
    about,
    after_help = "Examples:
  tokensmith token list -A                       every AccessToken, Ready or not, and when it expires
  tokensmith token show ci-scenarios -n team-a   what a token says (the token itself only with --reveal)
  tokensmith token renew ci-scenarios            a new token now; the old one stays valid until it expires
  tokensmith version                             this binary, the cluster and the installed API

Exit codes: 0 done (verify: valid), 1 verify: not valid, 2 usage error,
3 could not find out (no cluster, refused, CRDs not installed, JWKS unreachable),
4 not found."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator: reconcile issuers, AccessTokens and AppRegistrations,
    /// and serve the token service.
    Run(Box<run::RunArgs>),
    /// Print the CRDs as YAML, or write them into `crds/` and the chart's
    /// `templates/crds/` with --write.
    Crdgen {
        /// Write the files under this repository root instead of printing.
        #[arg(long, value_name = "REPO_ROOT")]
        write: Option<PathBuf>,
    },
    /// Look at, check, list and renew tokens.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// This binary's version, the cluster's, and the tokensmith API it serves.
    Version {
        /// This binary's version only; no cluster needed.
        #[arg(long)]
        client: bool,
        #[command(flatten)]
        kube: KubeArgs,
    },
    /// Print a shell completion script, e.g.
    /// `tokensmith completion bash > ~/.local/share/bash-completion/completions/tokensmith`.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// How to reach the cluster: as kubectl does.
#[derive(Args, Clone, Debug)]
pub struct KubeArgs {
    /// A kubeconfig to use instead of the in-cluster config or $KUBECONFIG.
    #[arg(long, value_name = "PATH", global = true)]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use instead of its current one.
    #[arg(long, value_name = "NAME", global = true)]
    context: Option<String>,
}

impl KubeArgs {
    /// A client for the cluster, or why there is none, in one line.
    pub async fn client(&self) -> Result<Client, Failure> {
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..KubeConfigOptions::default()
        };
        let unusable = |e: &dyn std::fmt::Display| {
            Failure::unavailable(format!(
                "cannot use the kubeconfig: {}",
                failure::first_line(e)
            ))
        };
        let config = match &self.kubeconfig {
            Some(path) => {
                let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|e| {
                    Failure::unavailable(format!(
                        "cannot read the kubeconfig {}: {}",
                        path.display(),
                        failure::first_line(&e)
                    ))
                })?;
                Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .map_err(|e| unusable(&e))?
            }
            None if self.context.is_some() => Config::from_kubeconfig(&options)
                .await
                .map_err(|e| unusable(&e))?,
            None => Config::infer().await.map_err(|e| {
                if std::env::var_os("KUBECONFIG").is_some() {
                    unusable(&e)
                } else {
                    Failure::unavailable(
                        "no cluster configured: no $KUBECONFIG, no ~/.kube/config, and not in a pod (pass --kubeconfig)",
                    )
                }
            })?,
        };
        Client::try_from(config).map_err(|e| {
            Failure::unavailable(format!(
                "cannot build a client: {}",
                failure::first_line(&e)
            ))
        })
    }
}

/// Parses the command line and runs the command.
pub async fn main() -> ExitCode {
    // As a kubectl plugin, help and errors name it as kubectl users type it.
    let invoked_as_plugin = std::env::args()
        .next()
        .is_some_and(|arg0| arg0.ends_with("kubectl-tokensmith"));
    let mut command = Cli::command();
    if invoked_as_plugin {
        command = command.bin_name("kubectl tokensmith");
    }
    let cli = match Cli::from_arg_matches_mut(&mut command.clone().get_matches()) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    let result: Result<(), Failure> = match cli.command {
        Command::Run(args) => run::run(*args).await.map_err(|error| {
            // The operator's own errors carry their causes: all of them.
            Failure::unavailable(format!("{error:#}"))
        }),
        Command::Crdgen { write: None } => {
            for (_, yaml) in crate::crdgen::render(crate::crdgen::CRD_FOLDERS[0]) {
                print!("---\n{yaml}");
            }
            Ok(())
        }
        Command::Crdgen { write: Some(root) } => crate::crdgen::write_all(&root)
            .map(|paths| paths.iter().for_each(|p| println!("wrote {}", p.display())))
            .map_err(|e| {
                Failure::unavailable(format!(
                    "could not write the CRDs under {}: {e}",
                    root.display()
                ))
            }),
        Command::Token(command) => token::run(command).await,
        Command::Version { client, kube } => version(client, &kube).await,
        Command::Completion { shell } => {
            let name = command.get_bin_name().unwrap_or("tokensmith").to_string();
            clap_complete::generate(shell, &mut command, name, &mut std::io::stdout());
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {failure}");
            failure.exit_code()
        }
    }
}

async fn version(client_only: bool, kube: &KubeArgs) -> Result<(), Failure> {
    println!("client:     {}", env!("CARGO_PKG_VERSION"));
    if client_only {
        return Ok(());
    }
    let client = kube.client().await?;
    let server = client
        .apiserver_version()
        .await
        .map_err(|e| Failure::from_kube("the API server's version", e))?;
    println!("kubernetes: {}", server.git_version);
    let api = match kube::discovery::group(&client, crate::api::GROUP).await {
        Ok(group) => group
            .versions()
            .map(|v| format!("{}/{v}", crate::api::GROUP))
            .collect::<Vec<_>>()
            .join(", "),
        Err(kube::Error::Api(status)) if status.code == 404 => {
            "not installed (helm install the chart, or kubectl apply -f crds/)".into()
        }
        Err(e) => return Err(Failure::from_kube("the tokensmith API group", e)),
    };
    println!("api:        {api}");
    Ok(())
}
