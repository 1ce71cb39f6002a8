use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// tokensmith: API access tokens declared as Kubernetes resources.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CRDs as YAML, or write them into `crds/` (and the chart's
    /// `crds/` when it exists) with --write.
    Crdgen {
        /// Write the files under this repository root instead of printing.
        #[arg(long, value_name = "REPO_ROOT")]
        write: Option<PathBuf>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crdgen { write: None } => {
            for (_, yaml) in tokensmith::crdgen::render() {
                print!("---\n{yaml}");
            }
        }
        Command::Crdgen { write: Some(root) } => match tokensmith::crdgen::write_all(&root) {
            Ok(paths) => paths.iter().for_each(|p| println!("wrote {}", p.display())),
            Err(error) => {
                eprintln!(
                    "error: could not write the CRDs under {}: {error}",
                    root.display()
                );
                return std::process::ExitCode::FAILURE;
            }
        },
    }
    std::process::ExitCode::SUCCESS
}
