//! The command line: `run` (the operator), `crdgen`, and `token` helpers
//! for people.

mod run;
mod token;

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};
use kube::{Client, Config, config::KubeConfigOptions};

/// tokensmith: API access tokens declared as Kubernetes resources.
#[derive(Parser)]
#[command(version, about)]
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
    /// `crds/` with --write.
    Crdgen {
        /// Write the files under this repository root instead of printing.
        #[arg(long, value_name = "REPO_ROOT")]
        write: Option<PathBuf>,
    },
    /// Look at and check tokens.
    #[command(subcommand)]
    Token(token::TokenCommand),
}

/// How to reach the cluster.
#[derive(Args, Clone, Debug)]
pub struct KubeArgs {
    /// A kubeconfig to use instead of the in-cluster config or $KUBECONFIG.
    #[arg(long, value_name = "PATH")]
    kubeconfig: Option<PathBuf>,
}

impl KubeArgs {
    pub async fn client(&self) -> anyhow::Result<Client> {
        Ok(match &self.kubeconfig {
            Some(path) => {
                let kubeconfig = kube::config::Kubeconfig::read_from(path)?;
                let config =
                    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                        .await?;
                Client::try_from(config)?
            }
            None => Client::try_default().await?,
        })
    }
}

/// Parses the command line and runs the command.
pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(*args).await,
        Command::Crdgen { write: None } => {
            for (_, yaml) in crate::crdgen::render(crate::crdgen::CRD_FOLDERS[0]) {
                print!("---\n{yaml}");
            }
            Ok(())
        }
        Command::Crdgen { write: Some(root) } => crate::crdgen::write_all(&root)
            .map(|paths| paths.iter().for_each(|p| println!("wrote {}", p.display())))
            .map_err(|e| anyhow::anyhow!("could not write the CRDs under {}: {e}", root.display())),
        Command::Token(command) => token::run(command).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
