//! A real SMTP server for the email tests: `tests/support/smtp_sink.py` (aiosmtpd) in a child
//! process, which writes every message it accepts to a directory as JSON.
//!
//! The Python comes from `FLUXGATE_TEST_PYTHON` (`make test` points it at a virtualenv with
//! `tests/support/requirements.txt`), else `python3`. Without aiosmtpd the email tests are
//! skipped loudly, unless `FLUXGATE_TEST_REQUIRE_SMTP=1`, when they fail.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A message the sink accepted.
#[derive(Debug, Clone)]
pub struct Received {
    pub to: Vec<String>,
    pub subject: String,
    pub body: String,
}

impl Received {
    /// The token of the first link in the body (`…?token=…`).
    pub fn token(&self) -> String {
        let i = self
            .body
            .find("?token=")
            .unwrap_or_else(|| panic!("no link in {:?}", self.body));
        self.body[i + 7..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect()
    }
}

pub struct SmtpSink {
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

fn required() -> bool {
    std::env::var("FLUXGATE_TEST_REQUIRE_SMTP").is_ok_and(|v| v == "1" || v == "true")
}

impl SmtpSink {
    /// Starts a sink that refuses the first `reject_first` messages with a temporary failure.
    /// `None` (after saying so) when aiosmtpd is not available and not required.
    pub fn start(reject_first: u32) -> Option<SmtpSink> {
        let python = std::env::var("FLUXGATE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("support/smtp_sink.py");
        let dir = tempfile::tempdir().unwrap();
        let spawned = Command::new(&python)
            .arg(&script)
            .arg(dir.path())
            .arg("--reject-first")
            .arg(reject_first.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let skip = |why: String| {
            if required() {
                panic!("SMTP tests required (FLUXGATE_TEST_REQUIRE_SMTP=1) but {why}");
            }
            eprintln!(
                "\n*** SKIPPING SMTP test: {why}.\n\
                 *** `make test` installs aiosmtpd into a virtualenv; or set FLUXGATE_TEST_PYTHON.\n"
            );
            None
        };
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => return skip(format!("{python} cannot be started ({e})")),
        };
        let mut line = String::new();
        let stdout = child.stdout.take().unwrap();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let Some(port) = line
            .strip_prefix("READY ")
            .and_then(|p| p.trim().parse::<u16>().ok())
        else {
            let _ = child.kill();
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            return skip(format!(
                "the aiosmtpd sink did not start under {python}: {}",
                err.lines().last().unwrap_or("no output")
            ));
        };
        Some(SmtpSink { port, child, dir })
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message received so far, in order.
    pub fn messages(&self) -> Vec<Received> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| {
                let v: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
                Received {
                    to: v["to"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|t| t.as_str().unwrap().to_owned())
                        .collect(),
                    subject: v["subject"].as_str().unwrap().to_owned(),
                    body: v["body"].as_str().unwrap().to_owned(),
                }
            })
            .collect()
    }

    /// Waits (up to 15 s) until `n` messages have arrived and returns them.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let got = self.messages();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "expected {n} message(s), received {}: {got:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
