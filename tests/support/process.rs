//! The real `corerelay` binary as a test fixture: a relay (`serve`) or a sink started with a
//! config in a temporary directory, its address read from what it prints, stopped (with
//! SIGKILL, like a crash, or SIGTERM) when dropped or asked. [`RelayConfig`] writes the part
//! of a relay's configuration every test shares, so a test file writes only its own part.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_corerelay");

/// How long any wait in the tests may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A running corerelay process and the address it listens on.
pub struct Running {
    child: Option<Child>,
    pub addr: SocketAddr,
    /// Lines it printed to stdout after the address line.
    lines: mpsc::Receiver<String>,
    /// Lines it printed before the address line.
    pub before: Vec<String>,
}

impl Running {
    /// Starts `corerelay <args>` and waits for the line containing `marker` followed by an
    /// address.
    pub fn start(args: &[&str], marker: &str) -> Running {
        let mut child = Command::new(BIN)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start corerelay");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let err_tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = err_tx.send(format!("stderr: {line}"));
            }
        });
        let deadline = Instant::now() + PATIENCE;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.split(marker).nth(1) {
                        let addr = rest.split_whitespace().next().unwrap().parse().unwrap();
                        return Running {
                            child: Some(child),
                            addr,
                            lines: rx,
                            before: seen,
                        };
                    }
                    seen.push(line);
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "corerelay {args:?} did not print `{marker}`; it printed:\n{}",
                        seen.join("\n")
                    );
                }
            }
        }
    }

    /// Waits for a later line containing `marker` and returns what follows it.
    pub fn line_after(&self, marker: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.split(marker).nth(1) {
                        return rest.to_string();
                    }
                }
                Err(_) => panic!("no line with `{marker}`"),
            }
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The addresses of the listeners after the first, from the `listening on` lines the
    /// relay prints after the first one.
    pub fn more_listeners(&self, count: usize) -> Vec<SocketAddr> {
        let deadline = Instant::now() + PATIENCE;
        let mut found = Vec::new();
        while found.len() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .expect("the relay prints every listener");
            if let Some(rest) = line.split("listening on ").nth(1) {
                found.push(rest.split_whitespace().next().unwrap().parse().unwrap());
            }
        }
        found
    }

    /// Stops the process like a crash (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends a signal to the process.
    pub fn signal(&self, signal: i32) {
        if let Some(c) = &self.child {
            // SAFETY: sending a signal to our own child process by its pid.
            unsafe { libc::kill(c.id() as i32, signal) };
        }
    }

    /// Waits for the process to exit; its exit code, or `None` when still running after
    /// [`PATIENCE`].
    pub fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + PATIENCE;
        let child = self.child.as_mut()?;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Waits for the next printed line containing `text` and returns it.
    pub fn wait_line(&self, text: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => {}
                Err(_) => panic!("no line containing `{text}` within {PATIENCE:?}"),
            }
        }
    }

    /// Stops the process with SIGTERM and returns what it printed afterwards.
    pub fn terminate(&mut self) -> Vec<String> {
        if let Some(mut c) = self.child.take() {
            // SAFETY: sending a signal to our own child process by its pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
        self.lines.try_iter().collect()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A relay started from a config file written into `dir`. Unless the config says
/// otherwise, its HTTP listener takes a free port, so relays of parallel tests never share
/// one (SO_REUSEPORT would let them, silently).
pub fn relay(dir: &Path, config: &str) -> Running {
    let path = dir.join("corerelay.toml");
    let mut config = config.to_string();
    if !config.contains("[http]") {
        config.push_str("\n[http]\nlisten = \"127.0.0.1:0\"\n");
    }
    std::fs::write(&path, config).unwrap();
    Running::start(&["serve", "--config", path.to_str().unwrap()], "listening on ")
}

/// A relay configuration for a test: the part every test shares, plus what the test adds.
///
/// The shared part is `[server]` with `cores` unpinned cores (tests share the machine's
/// CPUs) and a small `io_memory_bytes` (io_uring buffers count against RLIMIT_MEMLOCK, and
/// many relays run at once); `[smtp]` and `[http]` listening on free ports of 127.0.0.1 (so
/// parallel tests never share one); and `[spool]` and `[log]` under the test's directory.
///
/// TOML forbids opening a table twice, so keys of these tables go through [`server`],
/// [`smtp`], [`http`] and [`spool`], which put them inside the table; a key the table
/// already has is replaced, so a test can move a listener to a port it chose. Everything
/// else goes through [`section`] (or [`listeners`]), written after the shared tables in
/// the order added.
///
/// [`server`]: RelayConfig::server
/// [`smtp`]: RelayConfig::smtp
/// [`http`]: RelayConfig::http
/// [`spool`]: RelayConfig::spool
/// [`section`]: RelayConfig::section
/// [`listeners`]: RelayConfig::listeners
#[derive(Clone, Debug)]
pub struct RelayConfig {
    server: Vec<String>,
    smtp: Vec<String>,
    http: Vec<String>,
    spool: Vec<String>,
    log: Vec<String>,
    sections: Vec<String>,
}

impl RelayConfig {
    /// The shared part for a relay of `cores` cores whose spool and log live in `dir`.
    pub fn new(dir: &Path, cores: usize) -> RelayConfig {
        RelayConfig {
            server: vec![
                format!("cores = {cores}"),
                "pin = false".to_string(),
                "io_memory_bytes = 524288".to_string(),
            ],
            smtp: vec![r#"listen = "127.0.0.1:0""#.to_string()],
            http: vec![r#"listen = "127.0.0.1:0""#.to_string()],
            spool: vec![format!("dir = \"{}\"", dir.join("spool").display())],
            log: vec![format!("dir = \"{}\"", dir.join("log").display())],
            sections: Vec::new(),
        }
    }

    /// Sets keys of `[server]`: `keys` holds `key = value` lines.
    pub fn server(mut self, keys: &str) -> RelayConfig {
        set_keys(&mut self.server, keys);
        self
    }

    /// Sets keys of `[smtp]`: `keys` holds `key = value` lines.
    pub fn smtp(mut self, keys: &str) -> RelayConfig {
        set_keys(&mut self.smtp, keys);
        self
    }

    /// Sets keys of `[http]`: `keys` holds `key = value` lines.
    pub fn http(mut self, keys: &str) -> RelayConfig {
        set_keys(&mut self.http, keys);
        self
    }

    /// Sets keys of `[spool]`: `keys` holds `key = value` lines.
    pub fn spool(mut self, keys: &str) -> RelayConfig {
        set_keys(&mut self.spool, keys);
        self
    }

    /// Serves SMTP on the `[[listeners]]` entries in `toml` instead of `smtp.listen`: the
    /// relay refuses a configuration that names both.
    pub fn listeners(mut self, toml: &str) -> RelayConfig {
        self.smtp.retain(|line| key_of(line) != "listen");
        self.section(toml)
    }

    /// Adds raw TOML after the shared tables. It must open with its own table header
    /// (`[delivery]`, `[[accounts]]`…); otherwise its keys would silently land in the table
    /// written before it. Empty text adds nothing.
    pub fn section(mut self, toml: &str) -> RelayConfig {
        let first = toml
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'));
        if let Some(first) = first {
            assert!(
                first.starts_with('['),
                "a section must open with a table header: {toml}"
            );
            self.sections.push(toml.to_string());
        }
        self
    }

    /// The configuration file's text.
    pub fn build(&self) -> String {
        let mut out = String::new();
        let tables = [
            ("server", &self.server),
            ("smtp", &self.smtp),
            ("http", &self.http),
            ("spool", &self.spool),
            ("log", &self.log),
        ];
        for (name, keys) in tables.into_iter().filter(|(_, keys)| !keys.is_empty()) {
            out.push_str(&format!("[{name}]\n{}\n\n", keys.join("\n")));
        }
        for section in &self.sections {
            out.push_str(section.trim_matches('\n'));
            out.push_str("\n\n");
        }
        out
    }
}

/// Puts each `key = value` line of `keys` into `table`, in place of a line with the same key.
fn set_keys(table: &mut Vec<String>, keys: &str) {
    for line in keys.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let key = key_of(line);
        match table.iter_mut().find(|old| key_of(old) == key) {
            Some(old) => *old = line.to_string(),
            None => table.push(line.to_string()),
        }
    }
}

/// The key of a `key = value` line.
fn key_of(line: &str) -> &str {
    match line.split_once('=') {
        Some((key, _)) => key.trim(),
        None => panic!("not a `key = value` line: {line}"),
    }
}

/// A sink on a free port storing messages in `maildir`, with optional scripted replies.
pub fn sink(maildir: &Path, extra: &[&str]) -> Running {
    sink_on("127.0.0.1:0", maildir, extra)
}

/// A sink on a given address (to bring a sink back on the port it had).
pub fn sink_on(listen: &str, maildir: &Path, extra: &[&str]) -> Running {
    let mut args = vec!["sink", "--listen", listen, "--maildir", maildir.to_str().unwrap()];
    args.extend_from_slice(extra);
    Running::start(&args, "listening on ")
}

/// The messages a sink stored, oldest first.
pub fn maildir_messages(maildir: &Path) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(maildir.join("new")) {
        Ok(d) => d.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(_) => return Vec::new(),
    };
    files.sort();
    files.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

/// Waits until `f` returns `Some`, or panics with `what` after [`PATIENCE`].
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The JSON records of every core log in `dir`.
pub fn log_records(dir: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        if let Ok(text) = std::fs::read_to_string(e.path()) {
            out.extend(text.lines().filter_map(|l| serde_json::from_str(l).ok()));
        }
    }
    out
}

/// The log records of one kind.
pub fn events(dir: &Path, kind: &str) -> Vec<serde_json::Value> {
    log_records(dir)
        .into_iter()
        .filter(|r| r["event"] == kind)
        .collect()
}

/// A free TCP port on 127.0.0.1 (for a server that must come back on the same port).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
