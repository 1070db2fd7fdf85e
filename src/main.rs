//! The `edgeflow` binary: `serve` (the default), `migrate`, `openapi`, `agent`.

use clap::{Parser, Subcommand};
use edgeflow::config::{Config, LogFormat};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

#[derive(Parser)]
#[command(name = "edgeflow", version, about = "EdgeFlow Control Center: the control plane for fleets of edge nodes")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API and the tunnel hub (the default).
    Serve,
    /// Create the database if missing and apply migrations, then exit.
    Migrate,
    /// Print the OpenAPI document.
    Openapi,
    /// Run the reference edge agent (or, with --simulate, a fleet of them).
    Agent(Box<edgeflow::agent::cli::AgentArgs>),
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=warn"));
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Json => registry.with(fmt::layer().json().flatten_event(true)).init(),
        LogFormat::Text => registry.with(fmt::layer()).init(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Openapi => {
            print!("{}", edgeflow::openapi::to_pretty_json()?);
            Ok(())
        }
        Command::Migrate => {
            init_logging(cli.config.log_format);
            edgeflow::db::create_database_if_missing(&cli.config.database_url).await?;
            let pool = edgeflow::db::connect(&cli.config).await?;
            edgeflow::db::migrate(&pool).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Agent(args) => {
            init_logging(cli.config.log_format);
            edgeflow::agent::cli::run(*args).await
        }
        Command::Serve => {
            init_logging(cli.config.log_format);
            tracing::debug!(config = ?cli.config, "starting");
            edgeflow::app::run(cli.config).await
        }
    }
}
