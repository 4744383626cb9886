//! Running the `fluxgate` binary as an operator would, for the process-level tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_fluxgate");

pub fn command(db: &str, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env("FLUXGATE_DATABASE_URL", db)
        .env("FLUXGATE_LISTEN", "127.0.0.1:0")
        .env("FLUXGATE_ARGON2_MEMORY_KIB", "256")
        .env("FLUXGATE_ARGON2_ITERATIONS", "1")
        .env_remove("FLUXGATE_BOOTSTRAP_PASSWORD")
        .env_remove("FLUXGATE_CONFIG");
    c
}

pub struct Running {
    pub child: Child,
    pub addr: String,
    pub stdout: Vec<String>,
}

/// Starts `fluxgate serve` and reads its stdout up to the "listening" line.
pub fn serve(db: &str) -> Running {
    serve_with(db, &[])
}

/// Starts `fluxgate serve` with extra environment variables.
pub fn serve_with(db: &str, env: &[(&str, &str)]) -> Running {
    serve_logging(db, env, Stdio::null())
}

/// Starts `fluxgate serve` with extra environment variables, its log (stderr) going to `log`.
pub fn serve_logging(db: &str, env: &[(&str, &str)], log: impl Into<Stdio>) -> Running {
    let mut c = command(db, &["serve"]);
    c.envs(env.iter().copied()).stderr(log);
    spawn_serving(c)
}

/// Spawns a command that runs `fluxgate serve` and reads its stdout up to the "listening" line.
pub fn spawn_serving(mut c: Command) -> Running {
    let child = c.stdout(Stdio::piped()).spawn().unwrap();
    let mut running = Running {
        child,
        addr: String::new(),
        stdout: Vec::new(),
    };
    let out = running.child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server prints its address");
        if let Some(addr) = line.strip_prefix("FluxGate listening on ") {
            running.addr = addr.to_owned();
            return running;
        }
        running.stdout.push(line);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A failed assertion must not leave a server behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    /// Sends SIGTERM and expects a clean exit.
    pub fn terminate(mut self) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = self.child.wait().unwrap();
        assert!(status.success(), "graceful shutdown exits 0: {status:?}");
    }
}

/// A request carrying `authorization: Bearer <token>`.
pub fn authed<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}
