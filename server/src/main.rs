//! `citadel`: the game server's command line. It only parses configuration
//! and starts the library's server.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "citadel", version, about = "The Citadel game server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve every title in the titles folder. Options come from the
    /// defaults, then --config, then CITADEL_* environment variables, then
    /// these flags (see docs/configuration.md).
    Serve {
        /// TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address and port to listen on [default: 127.0.0.1:7070].
        #[arg(long, value_name = "ADDR:PORT")]
        listen: Option<std::net::SocketAddr>,
        /// Folder for player files [default: var/data].
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Folder of title folders [default: titles].
        #[arg(long, value_name = "DIR")]
        titles: Option<PathBuf>,
        /// This server's own folder (journal, identity) [default: <data-dir>/server].
        #[arg(long, value_name = "DIR")]
        server_dir: Option<PathBuf>,
        /// Take the listening socket over from the server whose handoff
        /// socket this is (its <server_dir>/handoff.sock); that server then
        /// drains and exits. --listen is ignored. See docs/operations.md.
        #[arg(long, value_name = "SOCKET")]
        take_over: Option<PathBuf>,
        /// Log as JSON lines instead of text.
        #[arg(long)]
        log_json: bool,
    },
    /// Run a local cluster for development and tests: a NATS server and
    /// several game servers on loopback ports sharing one data folder and
    /// the bus. Prints each address; Ctrl-C stops them all gracefully.
    Cluster {
        /// How many game servers.
        #[arg(long, default_value_t = 3)]
        servers: usize,
        /// The first game server's port; the others follow.
        #[arg(long, default_value_t = 7070)]
        port: u16,
        /// NATS's port.
        #[arg(long, default_value_t = 4222)]
        nats_port: u16,
        /// The nats-server binary [default: nats-server on PATH].
        #[arg(long, value_name = "PATH", default_value = "nats-server")]
        nats_server: PathBuf,
        /// The folder every server shares [default: var/cluster].
        #[arg(long, value_name = "DIR", default_value = "var/cluster")]
        data_dir: PathBuf,
        /// Folder of title folders [default: titles].
        #[arg(long, value_name = "DIR", default_value = "titles")]
        titles: PathBuf,
        /// A configuration file every server reads.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run the gateway (docs/gateway.md): where players log in and are
    /// given a game server, and where payment providers send
    /// notifications. It reads the same configuration file as the game
    /// servers (its `[gateway]` section; the world store, titles and token
    /// secret are shared).
    Gateway {
        /// TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address and port to listen on [default: 127.0.0.1:7060].
        #[arg(long, value_name = "ADDR:PORT")]
        listen: Option<std::net::SocketAddr>,
        /// Log as JSON lines instead of text.
        #[arg(long)]
        log_json: bool,
    },
    /// Read a password from standard input and print its hash, for an
    /// `admin_users` entry of the configuration (docs/operations.md).
    HashPassword,
    /// Player files (docs/operations.md, Player files).
    Player {
        #[command(subcommand)]
        command: PlayerCommand,
    },
}

#[derive(Subcommand)]
enum PlayerCommand {
    /// Print a player file of any format (json, msgpack, with or without
    /// lz4, or plain JSON from before headers) as the state's JSON,
    /// migrated to the current format_version; what the file is goes to
    /// standard error. A corrupted file is an error naming what is wrong.
    Show {
        /// A player file or a snapshot on disk.
        #[arg(value_name = "FILE", required_unless_present_all = ["title", "player"], conflicts_with_all = ["title", "player"])]
        file: Option<PathBuf>,
        /// The player's title, to read their file from the configured
        /// store (the data folder, or S3).
        #[arg(long, requires = "player")]
        title: Option<String>,
        /// The player, with --title.
        #[arg(long, requires = "title")]
        player: Option<String>,
        /// TOML configuration file (where the store is), with --title.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let (config, listen, data_dir, titles, server_dir, take_over, log_json) = match Cli::parse().command {
        Command::Serve { config, listen, data_dir, titles, server_dir, take_over, log_json } => {
            (config, listen, data_dir, titles, server_dir, take_over, log_json)
        }
        Command::HashPassword => return hash_password(),
        Command::Player { command: PlayerCommand::Show { file, title, player, config } } => {
            return show_player(file, title, player, config)
        }
        Command::Gateway { config, listen, log_json } => return gateway(config, listen, log_json),
        Command::Cluster { servers, port, nats_port, nats_server, data_dir, titles, config } => {
            let opts = citadel_server::cluster::ClusterOptions {
                servers,
                first_port: port,
                nats_port,
                nats_server,
                data_dir,
                titles,
                config,
            };
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            return rt.block_on(citadel_server::cluster::run(opts, shutdown_signal()));
        }
    };
    logs(log_json);
    let mut cfg = citadel_server::Config::from_file(config.as_deref())?;
    cfg.apply_env(|k| std::env::var(k).ok())?;
    if let Some(v) = listen {
        cfg.listen = v;
    }
    if let Some(v) = data_dir {
        cfg.data_dir = v;
    }
    if let Some(v) = titles {
        cfg.titles = v;
    }
    if let Some(v) = server_dir {
        cfg.server_dir = Some(v);
    }
    // Before the runtime: the descriptor arrives over a blocking socket.
    let taken = take_over.map(|p| citadel_server::handoff::take_over(&p)).transpose()?;
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async move {
        match taken {
            Some((listener, old)) => {
                let listener = tokio::net::TcpListener::from_std(listener).context("using the taken-over socket")?;
                citadel_server::run_taking_over(cfg, listener, shutdown_signal(), old).await
            }
            None => {
                let listener = citadel_server::listener::bind(cfg.listen)
                    .with_context(|| format!("listening on {}", cfg.listen))?;
                citadel_server::run(cfg, listener, shutdown_signal()).await
            }
        }
    })
}

fn logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        logs.json().init();
    } else {
        logs.init();
    }
}

fn gateway(config: Option<PathBuf>, listen: Option<std::net::SocketAddr>, log_json: bool) -> anyhow::Result<()> {
    logs(log_json);
    let mut cfg = citadel_server::Config::from_file(config.as_deref())?;
    cfg.apply_env(|k| std::env::var(k).ok())?;
    if let Some(v) = listen {
        cfg.gateway.listen = v;
    }
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async move {
        let listener = citadel_server::listener::bind(cfg.gateway.listen)
            .with_context(|| format!("listening on {}", cfg.gateway.listen))?;
        citadel_server::gateway::run(cfg, listener, shutdown_signal()).await
    })
}

fn show_player(
    file: Option<PathBuf>,
    title: Option<String>,
    player: Option<String>,
    config: Option<PathBuf>,
) -> anyhow::Result<()> {
    use citadel_server::player_file::ShowSource;
    let source = match (file, title, player) {
        (Some(path), _, _) => ShowSource::Path(path),
        (None, Some(title), Some(player)) => ShowSource::Player { title, player },
        _ => anyhow::bail!("name a FILE, or --title and --player"),
    };
    let mut cfg = citadel_server::Config::from_file(config.as_deref())?;
    cfg.apply_env(|k| std::env::var(k).ok())?;
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let (json, about) = rt.block_on(citadel_server::player_file::show(&cfg, &source))?;
    eprintln!("{about}");
    println!("{json}");
    Ok(())
}

fn hash_password() -> anyhow::Result<()> {
    let mut password = String::new();
    std::io::stdin().read_line(&mut password).context("reading the password from standard input")?;
    let password = password.trim_end_matches(['\n', '\r']);
    anyhow::ensure!(password.len() >= 12, "use a password of at least 12 characters");
    println!("{}", citadel_server::admin::auth::PasswordHash::make(password).context("reading /dev/urandom")?);
    Ok(())
}

/// Completes on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
