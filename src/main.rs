//! The `tonewall` binary: `serve`, `check-config`, `hash-key`, `demo`.
//!
//! Exit codes: 0 clean, 2 bad config or arguments (the message names the key), 1 runtime
//! failure. Must never: print a secret (the effective config holds only env var names and
//! key hashes).

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tonewall::metrics::{init_logging, LogFormat};

#[derive(Parser)]
#[command(
    name = "tonewall",
    version,
    about = "Secure call platform: bridges a live call and masks DTMF card digits"
)]
struct Cli {
    /// Log format on stderr (filters from RUST_LOG).
    #[arg(long, global = true, value_enum, default_value_t = Format::Pretty)]
    log_format: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Json,
    Pretty,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        #[arg(long)]
        config: PathBuf,
    },
    /// Validate a config file and print the effective config (no secrets).
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
    /// Read an API key on stdin and print its hash for `tenant.api_keys`.
    HashKey,
    /// A self-contained demo on loopback: server, simulated carrier and phones.
    Demo {
        /// Where the demo's HTTP API and representative page listen (loopback only).
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: std::net::SocketAddr,
        /// Secure the call through the API and exit when the walk-through is done
        /// (instead of waiting for the user on the representative's page).
        #[arg(long)]
        non_interactive: bool,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if matches!(cli.command, Command::Demo { .. }) && std::env::var_os("RUST_LOG").is_none() {
        // The walk-through is on stdout; keep the server's own log to warnings.
        std::env::set_var("RUST_LOG", "warn");
    }
    init_logging(match cli.log_format {
        Format::Json => LogFormat::Json,
        Format::Pretty => LogFormat::Pretty,
    });
    match cli.command {
        Command::CheckConfig { config } => match tonewall::config::load(&config) {
            Ok(c) => match toml::to_string_pretty(&c) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: cannot print the config: {e}");
                    ExitCode::from(1)
                }
            },
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::HashKey => {
            let mut key = String::new();
            if let Err(e) = std::io::stdin().read_to_string(&mut key) {
                eprintln!("error: cannot read the key from stdin: {e}");
                return ExitCode::from(1);
            }
            let key = key.trim();
            if key.is_empty() {
                eprintln!("error: no key on stdin");
                return ExitCode::from(2);
            }
            println!("{}", tonewall::api::auth::hash_key(key));
            ExitCode::SUCCESS
        }
        Command::Demo {
            http,
            non_interactive,
        } => {
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            let opts = tonewall::demo::DemoOptions {
                http,
                non_interactive,
            };
            match rt.block_on(tonewall::demo::run(opts)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: demo failed: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Serve { config } => {
            let config = match tonewall::config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            match rt.block_on(tonewall::server::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
