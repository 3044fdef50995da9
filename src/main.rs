//! The `weir` command line: run, check, explain, version. Thin: parses
//! arguments, sets up logging and maps outcomes to exit codes.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use weir::config;

#[derive(Parser)]
#[command(name = "weir", version = weir::VERSION, about = "Layer-7 canary traffic-splitting edge proxy")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct ConfigArg {
    /// Config file.
    #[arg(short = 'c', long = "config", env = "WEIR_CONFIG", default_value = "/etc/weir/weir.yaml")]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Run(ConfigArg),
    /// Validate a config file; print every problem; exit 1 when invalid.
    Check(ConfigArg),
    /// Print the routing decision for a described request.
    Explain {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        host: String,
        #[arg(long, default_value = "/")]
        path: String,
        /// `Name:Value`, repeatable.
        #[arg(long = "header", value_parser = parse_header)]
        headers: Vec<(String, String)>,
        /// `name=value`, repeatable.
        #[arg(long = "cookie", value_parser = parse_cookie)]
        cookies: Vec<(String, String)>,
        /// Raw query string, e.g. `player=42&x=1`.
        #[arg(long)]
        query: Option<String>,
    },
    /// Print the version.
    Version,
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once(':').ok_or("expected Name:Value")?;
    Ok((k.trim().to_string(), v.trim().to_string()))
}

fn parse_cookie(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or("expected name=value")?;
    Ok((k.trim().to_string(), v.trim().to_string()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("weir {}", weir::VERSION);
            ExitCode::SUCCESS
        }
        Command::Check(c) => check(&c.config),
        Command::Explain { config, host, path, headers, cookies, query } => {
            let q = weir::explain::Query { host, path, headers, cookies, query };
            explain(&config.config, &q)
        }
        Command::Run(c) => match run(c.config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("weir: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn print_problems(path: &std::path::Path, e: &config::ConfigError) {
    let problems = e.problems();
    eprintln!("{}: {} problem(s)", path.display(), problems.len());
    for p in problems {
        eprintln!("  - {p}");
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match config::load(path) {
        Ok(s) => {
            println!(
                "{}: ok ({} routes, {} upstreams, sha256 {})",
                path.display(),
                s.table.routes.len(),
                s.upstreams.len(),
                &s.sha256[..12]
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            print_problems(path, &e);
            ExitCode::FAILURE
        }
    }
}

fn explain(path: &std::path::Path, q: &weir::explain::Query) -> ExitCode {
    let snapshot = match config::load(path) {
        Ok(s) => s,
        Err(e) => {
            print_problems(path, &e);
            return ExitCode::FAILURE;
        }
    };
    let draw = rand::random_range(0..weir::routing::BUCKETS);
    match weir::explain::explain(&snapshot, q, draw) {
        Ok(x) => {
            match serde_json::to_string_pretty(&x) {
                Ok(s) => println!("{s}"),
                Err(e) => eprintln!("weir: {e}"),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("weir: {e}");
            ExitCode::from(2)
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("WEIR_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().json().with_env_filter(filter).with_writer(std::io::stderr).init();
}

fn run(path: PathBuf) -> anyhow::Result<()> {
    init_logging();
    let snapshot = match config::load(&path) {
        Ok(s) => s,
        Err(e) => {
            print_problems(&path, &e);
            anyhow::bail!("invalid config");
        }
    };
    // TOKIO_WORKER_THREADS sets the worker count (default: one per core).
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    rt.block_on(weir::app::run(path, snapshot))?;
    Ok(())
}
