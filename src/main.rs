//! The `corerelay` command: `serve` runs the relay, `sink` and `load` are its test peers,
//! `check-config` validates a configuration file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use corerelay::config::{self, Config, Overrides};
use corerelay::tools::{load, scripted, sink};

#[derive(Parser)]
#[command(
    name = "corerelay",
    version,
    about = "SMTP relay for email-sending services, thread-per-core on io_uring"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay (on the embedded default configuration when no --config is given).
    Serve(ServeArgs),
    /// Run an SMTP sink that accepts (or scripts replies to) every message.
    Sink(SinkArgs),
    /// Send a load of messages to an SMTP server and report throughput and latency.
    Load(LoadArgs),
    /// Ask the running relay to reload its configuration (SIGHUP to the pid in the spool's
    /// lock file); the outcome is in the core logs (`reloaded` or `reload_refused`).
    Reload {
        /// The relay's configuration file (to find its spool directory).
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        spool_dir: Option<String>,
    },
    /// Check this host against tuning/ for a configuration and print each finding with its fix.
    Doctor {
        /// The TOML file (the embedded default when omitted).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// DKIM key management.
    Dkim {
        #[command(subcommand)]
        command: DkimCommand,
    },
    /// Print the table of every metric corerelay exports (Markdown).
    Metrics,
    /// Validate a configuration file and print the effective settings.
    CheckConfig {
        /// The TOML file (the embedded default when omitted).
        file: Option<PathBuf>,
    },
    /// Hash a password for an account's `credentials` (Argon2id, PHC string). The password
    /// is read from the first line of standard input, so it stays out of shell history.
    HashPassword,
}

#[derive(Subcommand)]
enum DkimCommand {
    /// Make a signing key: writes the private key (PKCS#8 PEM, mode 0600) and prints the DNS
    /// TXT record to publish.
    Keygen {
        #[arg(long)]
        domain: String,
        #[arg(long)]
        selector: String,
        /// rsa (2048 bits), rsa3072 or ed25519.
        #[arg(long, default_value = "rsa")]
        algorithm: String,
        /// Where to write the private key (default: <selector>.<domain>.key).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// Configuration file (TOML).
    #[arg(long)]
    config: Option<PathBuf>,
    /// SMTP listen address, e.g. 127.0.0.1:2525.
    #[arg(long)]
    listen: Option<String>,
    /// Cores to run on: `all`, a count, or a list like 0,2,4.
    #[arg(long)]
    cores: Option<String>,
    #[arg(long)]
    spool_dir: Option<String>,
    #[arg(long)]
    log_dir: Option<String>,
    /// Nameserver (IP or IP:PORT); default: /etc/resolv.conf.
    #[arg(long)]
    dns: Option<String>,
    /// Send everything to HOST:PORT instead of looking up MX records.
    #[arg(long)]
    smarthost: Option<String>,
    /// HTTP listen address for /metrics, /healthz, /readyz (and tracking).
    #[arg(long)]
    http_listen: Option<String>,
}

#[derive(Args)]
struct SinkArgs {
    #[arg(long, default_value = "127.0.0.1:2526")]
    listen: SocketAddr,
    /// Store every accepted message in this maildir.
    #[arg(long)]
    maildir: Option<PathBuf>,
    /// Reply code for successive messages (repeatable), e.g. --reply 451 --reply 250.
    #[arg(long = "reply")]
    replies: Vec<u16>,
    /// Reply code once the --reply list is used up.
    #[arg(long, default_value_t = 250)]
    then: u16,
    /// Refuse this percentage of messages at random, each with 451 or 550 (fault injection).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
    random_fail: u8,
    #[arg(long, default_value_t = 1)]
    cores: usize,
    /// Offer STARTTLS with a self-signed certificate.
    #[arg(long)]
    tls: bool,
    /// Reply codes to successive RCPTs for one address: ADDR=CODE[,CODE...] (repeatable).
    #[arg(long = "rcpt-reply")]
    rcpt_replies: Vec<String>,
    /// Drop the connection in the middle of DATA for the first N messages.
    #[arg(long, default_value_t = 0)]
    drop_mid_data: usize,
    /// Do not offer PIPELINING.
    #[arg(long)]
    no_pipelining: bool,
    /// Offer CHUNKING and accept BDAT.
    #[arg(long)]
    chunking: bool,
    /// Offer STARTTLS but break the handshake (answer 220, then send garbage).
    #[arg(long)]
    broken_tls: bool,
    /// Offer AUTH PLAIN LOGIN over TLS and require it: USER:PASSWORD.
    #[arg(long)]
    auth: Option<String>,
    /// Announce this SIZE limit in bytes.
    #[arg(long)]
    size: Option<u64>,
    /// Answer 452 4.5.3 to RCPTs beyond this many in one transaction.
    #[arg(long)]
    max_rcpts: Option<usize>,
    /// Write one JSON line per accepted message to this file.
    #[arg(long)]
    record: Option<PathBuf>,
    /// A slow MX: wait this many milliseconds before answering the end of each message.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// A stalled MX: while this file exists, hold the answer to the end of each message.
    #[arg(long)]
    pause_file: Option<PathBuf>,
    /// Write the summary (with the per-account end-to-end latencies) as JSON to this file
    /// whenever it is printed (SIGINT, SIGTERM, SIGUSR1).
    #[arg(long)]
    json_summary: Option<PathBuf>,
}

#[derive(Args)]
struct LoadArgs {
    #[arg(long, default_value = "127.0.0.1:2525")]
    target: SocketAddr,
    #[arg(long, default_value_t = 1000)]
    messages: u64,
    #[arg(long, default_value_t = 10)]
    concurrency: usize,
    /// Body size of each message in bytes.
    #[arg(long, default_value_t = 2048)]
    size: usize,
    /// Sender address; a comma-separated list makes the messages take the senders in turn
    /// (several accounts at once).
    #[arg(long, default_value = "load@load.example")]
    from: String,
    #[arg(long, default_value = "sink@sink.example")]
    to: String,
    /// Messages sent on one connection before it is closed and a new one opened.
    #[arg(long, default_value_t = 100)]
    per_connection: usize,
    #[arg(long, default_value_t = 1)]
    cores: usize,
    /// Write the ids of acknowledged messages to this file.
    #[arg(long)]
    ack_log: Option<PathBuf>,
    /// Send a message again (same id) after its connection failed, for up to this many
    /// milliseconds after its first try: what a sending service does when its relay restarts.
    #[arg(long, default_value_t = 0)]
    retry_ms: u64,
    /// Messages started per second over all connections (0: as fast as they go).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Connect from this local address (e.g. 127.0.0.2: all of 127/8 is loopback).
    #[arg(long)]
    source: Option<std::net::IpAddr>,
    /// Stop starting messages after this many seconds (0: when --messages are sent).
    #[arg(long, default_value_t = 0.0)]
    duration_s: f64,
    /// The account name stamped in X-Load-Account (and the report's name for it).
    #[arg(long, default_value = "load")]
    name: String,
    /// Send as several accounts at once, one flag each: name=N,from=ADDR,source=IP,
    /// messages=N,size=BYTES,rate=PER_S,concurrency=N,duration_s=S,start_s=S,group=G (keys
    /// left out take the values of the flags above).
    #[arg(long = "account")]
    accounts: Vec<String>,
    /// The accounts (and optionally target and recipient) from a TOML scenario file; see
    /// BENCHMARKS.md "Fairness".
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// The body: `text` (plain-text filler) or `html` (a multipart/alternative newsletter
    /// with a quoted-printable HTML part holding a link every ~400 bytes), of about --size.
    #[arg(long, default_value = "text")]
    body: load::BodyKind,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Sink(a) => run_sink(a),
        Command::Load(a) => run_load(a),
        Command::CheckConfig { file } => check_config(file),
        Command::Doctor { config } => doctor(config),
        Command::Reload { config, spool_dir } => reload(config, spool_dir),
        Command::Dkim {
            command:
                DkimCommand::Keygen {
                    domain,
                    selector,
                    algorithm,
                    out,
                },
        } => dkim_keygen(&domain, &selector, &algorithm, out),
        Command::Metrics => {
            print!("{}", corerelay::observe::metrics::markdown());
            Ok(())
        }
        Command::HashPassword => hash_password(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("corerelay: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(file: Option<&PathBuf>, overrides: &Overrides) -> Result<Config, String> {
    Config::load(file.map(PathBuf::as_path), overrides)
}

fn serve(args: ServeArgs) -> Result<(), String> {
    let overrides = Overrides {
        listen: args.listen,
        cores: args.cores,
        spool_dir: args.spool_dir,
        log_dir: args.log_dir,
        dns: args.dns,
        smarthost: args.smarthost,
        http_listen: args.http_listen,
    };
    let config = load_config(args.config.as_ref(), &overrides)?;
    corerelay::ingress::tls::ensure_provider();
    let source = corerelay::runtime::control::Source {
        path: args.config,
        overrides,
    };
    corerelay::runtime::serve(config, source)
}

fn run_sink(a: SinkArgs) -> Result<(), String> {
    let rcpt_replies = a
        .rcpt_replies
        .iter()
        .map(|r| scripted::Script::parse_rcpt_reply(r))
        .collect::<Result<_, _>>()?;
    let auth = match &a.auth {
        None => None,
        Some(pair) => {
            let (user, password) = pair.split_once(':').ok_or("--auth takes USER:PASSWORD")?;
            Some((user.to_string(), password.to_string()))
        }
    };
    sink::run(sink::SinkOptions {
        listen: a.listen,
        maildir: a.maildir,
        replies: a.replies,
        then: a.then,
        random_fail_percent: a.random_fail,
        cores: a.cores,
        tls: a.tls,
        script: scripted::Script {
            rcpt_replies,
            drop_mid_data_count: a.drop_mid_data,
            no_pipelining: a.no_pipelining,
            chunking: a.chunking,
            starttls: a.tls,
            broken_tls: a.broken_tls,
            auth,
            size_max_bytes: a.size,
            rcpts_per_transaction_max_count: a.max_rcpts,
            record: a.record,
        },
        delay: std::time::Duration::from_millis(a.delay_ms),
        pause_file: a.pause_file,
        json_summary: a.json_summary,
    })
}

fn run_load(a: LoadArgs) -> Result<(), String> {
    use corerelay::tools::scenario;
    let json = a.json;
    let defaults = scenario::AccountLoad {
        name: a.name,
        from: a.from,
        source: a.source,
        messages: a.messages,
        size_bytes: a.size,
        rate_per_second: a.rate.max(0.0),
        concurrency: a.concurrency.max(1),
        duration: (a.duration_s > 0.0).then(|| std::time::Duration::from_secs_f64(a.duration_s)),
        start: std::time::Duration::ZERO,
        group: None,
    };
    let (mut target, mut to) = (a.target, a.to);
    let accounts = match (&a.scenario, a.accounts.is_empty()) {
        (Some(path), true) => {
            let file = scenario::read_file(path, &defaults)?;
            target = file.target.unwrap_or(target);
            to = file.to.unwrap_or(to);
            file.accounts
        }
        (Some(_), false) => return Err("give --scenario or --account, not both".into()),
        (None, true) => vec![defaults],
        (None, false) => a
            .accounts
            .iter()
            .enumerate()
            .map(|(i, spec)| scenario::parse_account_flag(spec, i, &defaults))
            .collect::<Result<_, _>>()?,
    };
    let report = load::run(load::LoadOptions {
        target,
        to,
        per_connection: a.per_connection.max(1),
        cores: a.cores,
        ack_log: a.ack_log,
        retry_for: std::time::Duration::from_millis(a.retry_ms),
        accounts,
        body: a.body,
    })?;
    if json {
        println!("{}", serde_json::to_string(&report).map_err(|e| e.to_string())?);
    } else {
        println!("{}", report.human());
    }
    if report.total.acked == 0 {
        return Err("no message was acknowledged".into());
    }
    Ok(())
}

fn reload(file: Option<PathBuf>, spool_dir: Option<String>) -> Result<(), String> {
    let overrides = Overrides {
        spool_dir,
        ..Overrides::default()
    };
    let config = load_config(file.as_ref(), &overrides)?;
    let lock = config.spool.dir.join("corerelay.lock");
    let text = std::fs::read_to_string(&lock).map_err(|e| format!("cannot read {}: {e}", lock.display()))?;
    let pid: i32 = text
        .trim()
        .parse()
        .map_err(|_| format!("{} holds no pid: is corerelay running?", lock.display()))?;
    // SAFETY: kill(2) with a pid read from our lock file and a valid signal number.
    if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
        return Err(format!(
            "cannot signal pid {pid}: {}",
            std::io::Error::last_os_error()
        ));
    }
    println!(
        "corerelay: asked pid {pid} to reload; see `reloaded` or `reload_refused` in {}",
        config.log.dir.display()
    );
    Ok(())
}

fn dkim_keygen(domain: &str, selector: &str, algorithm: &str, out: Option<PathBuf>) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let algo = corerelay::dkim::KeygenAlgorithm::parse(algorithm)
        .ok_or_else(|| format!("unknown algorithm `{algorithm}` (rsa, rsa2048, rsa3072, ed25519)"))?;
    let key = corerelay::dkim::generate(algo, domain, selector).map_err(|e| e.to_string())?;
    let path = out.unwrap_or_else(|| PathBuf::from(format!("{selector}.{domain}.key")));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    f.write_all(key.private_key_pem.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    eprintln!(
        "corerelay: private key written to {}; publish this record:",
        path.display()
    );
    println!("{}", key.zone_file_line());
    Ok(())
}

/// Prints every finding; fails when one says corerelay cannot run safely here.
fn doctor(file: Option<PathBuf>) -> Result<(), String> {
    let config = load_config(file.as_ref(), &Overrides::default())?;
    let findings = corerelay::doctor::run(&config);
    for f in &findings {
        println!("{f}");
    }
    let fails = findings
        .iter()
        .filter(|f| f.level == corerelay::doctor::Level::Fail)
        .count();
    let warns = findings
        .iter()
        .filter(|f| f.level == corerelay::doctor::Level::Warn)
        .count();
    println!("corerelay doctor: {fails} failing, {warns} warnings");
    if fails > 0 {
        Err(format!("{fails} checks failed"))
    } else {
        Ok(())
    }
}

fn hash_password() -> Result<(), String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password: {e}"))?;
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        return Err("give the password on standard input".into());
    }
    println!("{}", corerelay::ingress::auth::hash_password(password)?);
    Ok(())
}

fn check_config(file: Option<PathBuf>) -> Result<(), String> {
    let config = load_config(file.as_ref(), &Overrides::default())?;
    println!("{config:#?}");
    let online = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let cores = config.core_count(online);
    config.check_pinned_against(cores).map_err(|e| e.to_string())?;
    println!("\n# placement on this machine ({cores} cores)");
    for account in corerelay::account::Directory::new(&config.accounts, cores).accounts() {
        let dedicated = if account.share.dedicated {
            " (dedicated)"
        } else {
            ""
        };
        println!("account {} -> core {}{dedicated}", account.id, account.owner);
    }
    if file.is_none() {
        println!("\n# embedded default file:\n{}", config::DEFAULT_TOML);
    }
    Ok(())
}
