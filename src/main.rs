//! The `weir` command line: run, check, explain, version. Thin: parses
//! arguments, sets up logging and maps outcomes to exit codes.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use weir::config;

#[derive(Parser)]
#[command(name = "weir", version = weir::version::VERSION, about = "Layer-7 canary traffic-splitting edge proxy")]
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
    /// Send one admin action to every replica behind a DNS name (a
    /// headless Service) or a list of admin addresses, all at once.
    Fleet {
        /// rollback, resume, pause, promote, kill or unkill.
        #[arg(value_parser = clap::builder::PossibleValuesParser::new(weir::fleet::broadcast::ACTIONS))]
        action: String,
        /// Route name.
        route: String,
        /// `host:port` of the replicas' admin listeners; a name that
        /// resolves to many addresses reaches each. Repeatable.
        #[arg(long = "replicas", required = true)]
        replicas: Vec<String>,
        /// File with the admin bearer token (`admin.token_file`).
        #[arg(long = "token-file", env = "WEIR_ADMIN_TOKEN_FILE")]
        token_file: Option<PathBuf>,
    },
    /// Exit 0 when `URL` (plain http://host:port/path) answers 200 within
    /// 2 s: a container probe that needs no shell or curl in the image.
    Healthcheck {
        #[arg(default_value = "http://127.0.0.1:9901/ready")]
        url: String,
    },
    /// Show each route of a running weir: state, step, weight, latest
    /// verdict and its reason, evidence per test (from its admin API).
    /// `--wait` blocks until ROUTE is promoted (exit 0), rolled back or
    /// killed (exit 1), or `--timeout` passes (exit 2).
    Status {
        /// Route name (all routes when left out; `--wait` needs one).
        route: Option<String>,
        /// The admin API of the weir to ask.
        #[arg(long, env = "WEIR_ADMIN", default_value = "http://127.0.0.1:9901")]
        admin: String,
        /// Redraw every `--interval` (in place on a terminal; plain lines,
        /// printed on change, otherwise). Ctrl-C ends it.
        #[arg(long, conflicts_with_all = ["wait", "json"])]
        watch: bool,
        /// Block until the rollout ends; the exit code says how.
        #[arg(long, requires = "route")]
        wait: bool,
        /// With `--wait`: give up after this long (`30m`, `90s`).
        #[arg(long, default_value = "30m", value_parser = duration_arg)]
        timeout: std::time::Duration,
        /// Poll period for `--watch` and `--wait`.
        #[arg(long, default_value = "2s", value_parser = duration_arg)]
        interval: std::time::Duration,
        /// Print the admin API's JSON (the route, or every route).
        #[arg(long)]
        json: bool,
    },
    /// Write a weir config from what a cluster has: `ingress-nginx FILE|-`
    /// (Ingresses with canary annotations; `kubectl get ingress,service -A
    /// -o yaml` output works). The config goes to stdout (or `-o`), what
    /// could not be translated to stderr. Exit 0 complete, 1 incomplete
    /// (the config is valid; the list says what is missing), 2 failed.
    Import {
        #[command(subcommand)]
        from: ImportFrom,
    },
    /// The decision journal: `verify [PATH]` checks its hash chain and
    /// names the first edited, removed or reordered line (exit 1).
    Journal {
        #[command(subcommand)]
        action: JournalAction,
    },
    /// A self-contained demo on loopback: upstreams, players, a canary that
    /// climbs, breaks and is rolled back by weir; ends by itself.
    Demo,
    /// Print the version.
    Version,
}

#[derive(Subcommand)]
enum ImportFrom {
    /// Ingresses of ingress-nginx and their canary annotations.
    IngressNginx {
        /// Kubernetes YAML (multi-document or a List); `-` reads stdin.
        file: PathBuf,
        /// Only Ingresses of this class (or without one).
        #[arg(long, default_value = "nginx")]
        class: String,
        /// Write the config here instead of stdout.
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
    },
    /// Gateway API HTTPRoutes: weights, header/query/path matches, mirrors.
    GatewayApi {
        /// Kubernetes YAML (multi-document or a List); `-` reads stdin.
        file: PathBuf,
        /// Write the config here instead of stdout.
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum JournalAction {
    /// Check the chain: PATH is `state_dir` (every rotated file and
    /// journal.jsonl, from the first line; and state.json's record of the
    /// newest line) or one journal file.
    Verify {
        #[arg(default_value = "weir-state")]
        path: PathBuf,
    },
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once(':').ok_or("expected Name:Value")?;
    Ok((k.trim().to_string(), v.trim().to_string()))
}

fn duration_arg(s: &str) -> Result<std::time::Duration, String> {
    weir::units::parse_duration(s)
}

fn parse_cookie(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or("expected name=value")?;
    Ok((k.trim().to_string(), v.trim().to_string()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("weir {}", weir::version::VERSION);
            ExitCode::SUCCESS
        }
        Command::Check(c) => check(&c.config),
        Command::Explain { config, host, path, headers, cookies, query } => {
            let q = weir::explain::Query { host, path, headers, cookies, query, https: false };
            explain(&config.config, &q)
        }
        Command::Healthcheck { url } => match weir::status::cli::healthcheck(&url) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("weir healthcheck: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Fleet { action, route, replicas, token_file } => {
            weir::fleet::broadcast::command(&action, &route, &replicas, token_file.as_deref())
        }
        Command::Status { route, admin, watch, wait, timeout, interval, json } => {
            let mode = weir::status::cli::Mode { watch, wait, json };
            weir::status::cli::status(&admin, route.as_deref(), mode, timeout, interval)
        }
        Command::Journal { action: JournalAction::Verify { path } } => weir::journal::verify_dir(&path),
        Command::Import { from: ImportFrom::IngressNginx { file, class, output } } => {
            weir::import::cli::run(&file, output.as_deref(), |o| weir::import::ingress_nginx::import(o, &class))
        }
        Command::Import { from: ImportFrom::GatewayApi { file, output } } => {
            weir::import::cli::run(&file, output.as_deref(), weir::import::gateway_api::import)
        }
        Command::Demo => match demo() {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("weir demo: {e:#}");
                ExitCode::FAILURE
            }
        },
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
            for w in &s.warnings {
                eprintln!("  warning: {w}");
            }
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

/// Raise the soft open-file limit to the hard one (systemd and containers
/// often start processes at 1,024 soft with a far higher hard limit): each
/// client connection can hold a client socket, an upstream socket and a
/// shadow copy's. Says what it found, and warns when even the hard limit is
/// below what `limits.max_connections` needs.
fn raise_open_file_limit(max_connections: usize) {
    let before = rlimit::Resource::NOFILE.get().map(|(soft, _)| soft).unwrap_or(0);
    let needed = (max_connections as u64).saturating_mul(2).saturating_add(256);
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(now) if now < needed => tracing::warn!(
            before,
            now,
            needed,
            max_connections,
            "open-file limit below what limits.max_connections needs (2 per connection + 256); raise the hard limit (ulimit -Hn, LimitNOFILE=) or lower max_connections"
        ),
        Ok(now) => tracing::info!(before, now, "open-file limit"),
        Err(e) => tracing::warn!(before, error = %e, "cannot raise the open-file limit"),
    }
}

fn demo() -> anyhow::Result<bool> {
    // The terminal belongs to the live view; weir's own logs only on request.
    if std::env::var_os("WEIR_LOG").is_some() {
        init_logging();
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    rt.block_on(weir::demo::run())
}

fn run(path: PathBuf) -> anyhow::Result<()> {
    init_logging();
    // jemalloc's background thread purges freed pages on its own (10 s
    // decay), so memory taken by a connection flood goes back to the OS
    // once the flood is over, even while the proxy sits idle.
    #[cfg(feature = "jemalloc")]
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!(error = %e, "cannot start the allocator's background purge thread");
    }
    let snapshot = match config::load(&path) {
        Ok(s) => s,
        Err(e) => {
            print_problems(&path, &e);
            anyhow::bail!("invalid config");
        }
    };
    raise_open_file_limit(snapshot.limits.max_connections);
    // TOKIO_WORKER_THREADS sets the worker count (default: one per core).
    // With exactly one, the single-threaded scheduler does the same work
    // without the multi-thread scheduler's synchronisation.
    // WEIR_RUNTIME=per-core: one single-threaded runtime per worker, each
    // accepting on its own SO_REUSEPORT sockets (no work stealing).
    let workers = std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let layout = match std::env::var("WEIR_RUNTIME").as_deref().map(str::trim) {
        Ok("per-core") => weir::app::Layout::PerCore(workers),
        Ok("" | "work-stealing") | Err(_) => weir::app::Layout::Shared,
        Ok(other) => anyhow::bail!("WEIR_RUNTIME={other}: expected `work-stealing` (default) or `per-core`"),
    };
    tracing::info!(workers, runtime = ?layout, "runtime");
    let mut builder = if workers == 1 || layout != weir::app::Layout::Shared {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let rt = builder.enable_all().build().context("starting the runtime")?;
    rt.block_on(weir::app::run(path, snapshot, layout))?;
    Ok(())
}

#[cfg(all(test, feature = "jemalloc"))]
mod tests {
    /// The jemalloc defaults in .cargo/config.toml reach the allocator this
    /// binary links (cargo finds that file only when run inside the
    /// checkout; a build that misses it fails here).
    #[test]
    fn jemalloc_has_the_compiled_in_thread_cache_floor() {
        // The ctl returns the C string with its terminating NUL.
        let conf = tikv_jemalloc_ctl::config::malloc_conf::read().map(|c| c.trim_end_matches('\0'));
        assert_eq!(conf.ok(), Some("tcache_nslots_small_min:64"));
    }
}
