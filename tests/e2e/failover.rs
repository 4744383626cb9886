//! PostgreSQL failover, for real. A primary and a synchronous streaming standby are built from
//! Debian's PostgreSQL binaries in temporary folders, with `deploy/postgres/replication.conf`
//! (the file the deployment guide has operators include). Two FluxGate replicas share them
//! through one multi-host URL (`target_session_attrs=read-write`) while a writer per replica
//! creates users. Five times in a row: the primary's postmaster is killed (`kill -9`), the
//! standby promoted (`pg_ctl promote`), and the dead node rebuilt as the new primary's standby.
//! Checked: permission checks answer from memory while no primary is reachable, writes fail
//! only with UNAVAILABLE and succeed again by themselves, every acknowledged write is present,
//! the audit chain verifies on the last primary, revisions never go back, every permission
//! change made before a failover is honoured after it on both replicas, and the outbox and the
//! webhooks resume by themselves: every user created has its registration email (through a real
//! SMTP server, where Python's aiosmtpd is available) and its `user.created` webhook.
//!
//! Skipped loudly where PostgreSQL's server binaries are absent, unless
//! `FLUXGATE_TEST_REQUIRE_POSTGRES=1`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fluxgate_proto::v1 as pb;
use tonic::Code;

use crate::harness::{ADMIN, Backend, TestServer, authed, free_port, test_config};
use crate::smtp::SmtpSink;
use crate::webhooks::{Behaviour, receiver, subscribe};

/// The folder of `pg_ctl` and friends: `FLUXGATE_TEST_PG_BIN`, else the newest
/// `/usr/lib/postgresql/*/bin`.
fn pg_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FLUXGATE_TEST_PG_BIN") {
        return Some(p.into());
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("pg_ctl").exists() && p.join("postgres").exists())
        .collect();
    found.sort();
    found.pop()
}

/// PostgreSQL refuses to run as root: as root, its programs run as the `postgres` user.
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Whether any process still works in `data` (a killed postmaster's backends exit on their own,
/// a moment later).
fn lingering(data: &Path) -> bool {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    procs
        .filter_map(Result::ok)
        .filter_map(|p| std::fs::read_link(p.path().join("cwd")).ok())
        .any(|cwd| cwd == data)
}

/// One PostgreSQL node: its data folder and port.
struct Node {
    data: PathBuf,
    port: u16,
}

/// A primary and a standby, and which is which.
struct Cluster {
    bin: PathBuf,
    as_postgres: bool,
    root: tempfile::TempDir,
    nodes: [Node; 2],
    primary: usize,
}

impl Cluster {
    /// Runs a PostgreSQL program; panics with its output unless it succeeds.
    fn run(&self, program: &str, args: &[&str]) -> Output {
        self.try_run(program, args)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs a PostgreSQL program: its output, or what it said when it failed.
    fn try_run(&self, program: &str, args: &[&str]) -> Result<Output, String> {
        let exe = self.bin.join(program);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd
            .args(args)
            .current_dir(self.root.path())
            .output()
            .unwrap();
        if out.status.success() {
            return Ok(out);
        }
        Err(format!(
            "{program} {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }

    fn psql(&self, node: usize, sql: &str) -> String {
        let port = self.nodes[node].port.to_string();
        let out = self.run(
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-Atqc",
                sql,
            ],
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn data(&self, node: usize) -> String {
        self.nodes[node].data.display().to_string()
    }

    fn start(&self, node: usize) {
        let log = format!("{}/node{node}.log", self.root.path().display());
        self.start_folder(&self.data(node), self.nodes[node].port, &log);
    }

    /// Starts PostgreSQL on a data folder and port, logging to `log`.
    fn start_folder(&self, data: &str, port: u16, log: &str) {
        // The socket lives outside the data folder, which a rebuild replaces.
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1",
            self.root.path().display()
        );
        let args = [
            "-D", data, "-l", log, "-w", "-t", "60", "-o", &opts, "start",
        ];
        if let Err(e) = self.try_run("pg_ctl", &args) {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(15)..].join("\n");
            panic!("{e}\n--- {log} ---\n{tail}");
        }
    }

    /// A primary with the replication settings, its database, and a synchronous standby.
    fn new(bin: PathBuf) -> Cluster {
        let root = tempfile::tempdir().unwrap();
        let as_postgres = is_root();
        if as_postgres {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(root.path())
                .status()
                .unwrap();
            assert!(ok.success(), "chown the cluster folder to postgres");
        }
        let nodes = [0, 1].map(|i| Node {
            data: root.path().join(format!("node{i}")),
            port: free_port(),
        });
        let cluster = Cluster {
            bin,
            as_postgres,
            root,
            nodes,
            primary: 0,
        };
        let data = cluster.data(0);
        cluster.run(
            "initdb",
            &["-D", &data, "-U", "postgres", "-A", "trust", "--no-sync"],
        );
        let conf =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/postgres/replication.conf");
        let text = std::fs::read_to_string(&conf).unwrap();
        cluster.write_as_postgres(&format!("{data}/replication.conf"), &text);
        let main = std::fs::read_to_string(format!("{data}/postgresql.conf")).unwrap();
        cluster.write_as_postgres(
            &format!("{data}/postgresql.conf"),
            &format!("{main}\ninclude 'replication.conf'\n"),
        );
        cluster.start(0);
        cluster.psql(0, "CREATE DATABASE fluxgate");
        cluster.add_standby(1);
        cluster
    }

    /// Writes a file in a data folder, owned as the server needs.
    fn write_as_postgres(&self, path: &str, text: &str) {
        std::fs::write(path, text).unwrap();
        if self.as_postgres {
            Command::new("chown")
                .args(["postgres:postgres", path])
                .status()
                .unwrap();
        }
    }

    /// (Re)builds `node` as a streaming standby of the primary, then makes it synchronous.
    fn add_standby(&self, node: usize) {
        let data = self.data(node);
        let _ = std::fs::remove_dir_all(&data);
        // A killed postmaster leaves its socket and lock file behind.
        let socket = self
            .root
            .path()
            .join(format!(".s.PGSQL.{}", self.nodes[node].port));
        let _ = std::fs::remove_file(&socket);
        let _ =
            std::fs::remove_file(socket.with_extension(format!("{}.lock", self.nodes[node].port)));
        let port = self.nodes[self.primary].port.to_string();
        self.run(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-D",
                &data,
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
            ],
        );
        self.start(node);
        self.psql(
            self.primary,
            "ALTER SYSTEM SET synchronous_standby_names = '*'",
        );
        self.psql(self.primary, "SELECT pg_reload_conf()");
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.psql(
            self.primary,
            "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'",
        ) != "1"
        {
            assert!(
                Instant::now() < deadline,
                "the standby never became synchronous"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `kill -9` of the primary's postmaster; waits until its backends are gone too.
    fn kill_primary(&self) {
        let data = self.data(self.primary);
        let pid_file = std::fs::read_to_string(format!("{data}/postmaster.pid")).unwrap();
        let pid = pid_file.lines().next().unwrap().trim().to_owned();
        let ok = Command::new("kill").args(["-9", &pid]).status().unwrap();
        assert!(ok.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        while lingering(Path::new(&data))
            || std::net::TcpStream::connect(("127.0.0.1", self.nodes[self.primary].port)).is_ok()
        {
            assert!(Instant::now() < deadline, "the killed primary lingers");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Promotes the standby. With no standby of its own yet, it must not wait for one.
    fn promote(&mut self) {
        let standby = 1 - self.primary;
        let data = self.data(standby);
        self.run("pg_ctl", &["-D", &data, "-w", "-t", "60", "promote"]);
        self.psql(standby, "ALTER SYSTEM SET synchronous_standby_names = ''");
        self.psql(standby, "SELECT pg_reload_conf()");
        self.primary = standby;
    }

    /// The URL FluxGate uses: every host, and only a read-write server is taken.
    fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/fluxgate?target_session_attrs=read-write&connect_timeout=2",
            self.nodes[0].port, self.nodes[1].port
        )
    }

    fn stop_all(&self) {
        for node in 0..2 {
            let data = self.data(node);
            if Path::new(&format!("{data}/postmaster.pid")).exists() {
                let _ = Command::new(self.bin.join("pg_ctl"))
                    .args(["-D", &data, "-m", "immediate", "stop"])
                    .output();
                if self.as_postgres {
                    let _ = Command::new("runuser")
                        .args(["-u", "postgres", "--"])
                        .arg(self.bin.join("pg_ctl"))
                        .args(["-D", &data, "-m", "immediate", "stop"])
                        .output();
                }
            }
        }
    }
}

/// A highly available PostgreSQL as the failover test drives it.
trait Ha: Send + 'static {
    /// The URL FluxGate is given: every host, read-write only.
    fn url(&self) -> String;
    /// The lost machine: the primary's postmaster killed (and its manager with it).
    fn kill_primary(&mut self);
    /// What happens next without FluxGate's help: a promotion (by hand or by the manager).
    fn take_over(&mut self);
    /// The lost member back as the new primary's synchronous standby.
    fn rejoin(&mut self);
    /// The port of a standby, for a write sent to it directly.
    fn standby_port(&self) -> u16;
    /// What the cluster's managers logged lately, for a failure's message.
    fn diagnostics(&self) -> String {
        String::new()
    }
}

impl Ha for Cluster {
    fn url(&self) -> String {
        Cluster::url(self)
    }
    fn kill_primary(&mut self) {
        Cluster::kill_primary(self);
    }
    fn take_over(&mut self) {
        self.promote();
    }
    fn rejoin(&mut self) {
        self.add_standby(1 - self.primary);
    }
    fn standby_port(&self) -> u16 {
        self.nodes[1 - self.primary].port
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// A Patroni member: its configuration (from `deploy/patroni/patroni.yml`) and process.
struct Member {
    config: PathBuf,
    data: PathBuf,
    pg_port: u16,
    patroni: Option<std::process::Child>,
}

/// Two Patroni members on one etcd, the way docs/deployment.md deploys them.
struct Patroni {
    etcd: std::process::Child,
    as_postgres: bool,
    members: [Member; 2],
    root: tempfile::TempDir,
    /// The member whose machine is "lost" until it rejoins.
    lost: Option<usize>,
}

impl Patroni {
    fn new(bin: &Path) -> Patroni {
        let root = tempfile::tempdir().unwrap();
        let as_postgres = is_root();
        let etcd_port = free_port();
        let client = format!("http://127.0.0.1:{etcd_port}");
        let peer = format!("http://127.0.0.1:{}", free_port());
        let etcd = Command::new("etcd")
            .arg("--data-dir")
            .arg(root.path().join("etcd"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("default={peer}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let template = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/patroni/patroni.yml"),
        )
        .unwrap();
        let members = [0, 1].map(|i| {
            let data = root.path().join(format!("data{i}"));
            let pg_port = free_port();
            let text = template
                .replace("@NAME@", &format!("node{i}"))
                .replace("@HOST@", "127.0.0.1")
                .replace("@API_PORT@", &free_port().to_string())
                .replace("@PG_PORT@", &pg_port.to_string())
                .replace("@DATA@", &data.display().to_string())
                .replace("@BIN@", &bin.display().to_string())
                .replace("@ETCD@", &format!("127.0.0.1:{etcd_port}"))
                .replace("@SOCKETS@", &root.path().display().to_string());
            let unfilled = text
                .lines()
                .find(|l| !l.trim_start().starts_with('#') && l.contains('@'));
            assert!(unfilled.is_none(), "a value left to fill in: {unfilled:?}");
            let config = root.path().join(format!("node{i}.yml"));
            std::fs::write(&config, text).unwrap();
            Member {
                config,
                data,
                pg_port,
                patroni: None,
            }
        });
        if as_postgres {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(root.path())
                .status()
                .unwrap();
            assert!(ok.success());
        }
        let mut p = Patroni {
            etcd,
            as_postgres,
            members,
            root,
            lost: None,
        };
        p.start(0);
        p.wait_for(|p| p.primary() == Some(0), "node0 leads");
        p.start(1);
        p.wait_for(
            |p| p.synchronous() && p.patroni_sync_standby_is(1),
            "node1 is a synchronous standby",
        );
        p.psql(0, "CREATE DATABASE fluxgate").unwrap();
        p
    }

    fn start(&mut self, i: usize) {
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "patroni",
            ]);
            c
        } else {
            Command::new("patroni")
        };
        let log = std::fs::File::create(self.root.path().join(format!("patroni{i}.log"))).unwrap();
        self.members[i].patroni = Some(
            cmd.arg(&self.members[i].config)
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
    }

    fn psql(&self, i: usize, sql: &str) -> Option<String> {
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "psql",
            ]);
            c
        } else {
            Command::new("psql")
        };
        let out = cmd
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.members[i].pg_port.to_string(),
            ])
            .args(["-U", "postgres", "-d", "postgres", "-Atqc", sql])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// The member that accepts writes, if one does.
    fn primary(&self) -> Option<usize> {
        (0..2).find(|&i| self.psql(i, "SELECT pg_is_in_recovery()").as_deref() == Some("f"))
    }

    /// Whether the primary has a synchronous standby streaming.
    fn synchronous(&self) -> bool {
        self.primary().is_some_and(|i| {
            self.psql(
                i,
                "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'",
            )
            .as_deref()
                == Some("1")
        })
    }

    /// Whether Patroni itself (its state in etcd) has `node{i}` as the synchronous standby: only
    /// then will it promote that member when the leader is lost.
    fn patroni_sync_standby_is(&self, i: usize) -> bool {
        let out = Command::new("patronictl")
            .arg("-c")
            .arg(&self.members[i].config)
            .args(["list", "-f", "json"])
            .output();
        let Ok(out) = out else { return false };
        let members: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        members.as_array().is_some_and(|ms| {
            ms.iter().any(|m| {
                m["Member"] == format!("node{i}").as_str()
                    && m["Role"] == "Sync Standby"
                    && (m["State"] == "streaming" || m["State"] == "running")
            })
        })
    }

    fn wait_for(&self, ready: impl Fn(&Patroni) -> bool, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while !ready(self) {
            let log =
                std::fs::read_to_string(self.root.path().join("patroni0.log")).unwrap_or_default();
            assert!(Instant::now() < deadline, "never: {what}\n{log}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Ha for Patroni {
    fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/fluxgate?target_session_attrs=read-write&connect_timeout=2",
            self.members[0].pg_port, self.members[1].pg_port
        )
    }

    /// The primary's machine is lost: its Patroni and its postmaster die at once.
    fn kill_primary(&mut self) {
        let i = self.primary().expect("a primary to kill");
        if let Some(mut p) = self.members[i].patroni.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
        let data = self.members[i].data.clone();
        let pid = std::fs::read_to_string(data.join("postmaster.pid")).unwrap();
        let pid = pid.lines().next().unwrap().trim().to_owned();
        let _ = Command::new("kill").args(["-9", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while lingering(&data) {
            assert!(Instant::now() < deadline, "the killed primary lingers");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.lost = Some(i);
    }

    /// Patroni promotes the standby once the leader key expires (`ttl`).
    fn take_over(&mut self) {}

    /// The machine comes back: its Patroni rewinds it into the new primary's standby.
    fn rejoin(&mut self) {
        let i = self.lost.take().expect("a lost member");
        self.start(i);
        self.wait_for(
            |p| p.primary() == Some(1 - i) && p.synchronous() && p.patroni_sync_standby_is(i),
            "the lost member rejoins as the synchronous standby",
        );
    }

    fn standby_port(&self) -> u16 {
        let primary = self.primary().unwrap_or(0);
        self.members[1 - primary].pg_port
    }

    fn diagnostics(&self) -> String {
        (0..2)
            .map(|i| {
                let log = std::fs::read_to_string(self.root.path().join(format!("patroni{i}.log")))
                    .unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                format!(
                    "--- patroni{i} ---\n{}",
                    lines[lines.len().saturating_sub(12)..].join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Patroni {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut p) = m.patroni.take() {
                let _ = p.kill();
                let _ = p.wait();
            }
            if let Ok(pid) = std::fs::read_to_string(m.data.join("postmaster.pid"))
                && let Some(pid) = pid.lines().next()
            {
                let _ = Command::new("kill").args(["-9", pid.trim()]).status();
            }
        }
        let _ = self.etcd.kill();
        let _ = self.etcd.wait();
    }
}

/// Whether Patroni and etcd are installed (Debian's `patroni` and `etcd-server`).
fn patroni_installed() -> bool {
    ["patroni", "etcd"].iter().all(|p| {
        Command::new("sh")
            .args(["-c", &format!("command -v {p}")])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// The same five failovers, with Patroni (on etcd) promoting and rejoining by itself, from the
/// configuration file the deployment guide gives operators.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_failover_with_patroni() {
    let required = std::env::var("FLUXGATE_TEST_REQUIRE_PATRONI").is_ok_and(|v| v == "1");
    let (Some(bin), true) = (pg_bin(), patroni_installed()) else {
        assert!(
            !required,
            "FLUXGATE_TEST_REQUIRE_PATRONI=1 but patroni, etcd or PostgreSQL's binaries are missing"
        );
        eprintln!(
            "SKIPPED postgres_failover_with_patroni: install Debian's patroni, etcd-server and \
             postgresql"
        );
        return;
    };
    let cluster = blocking(move || Patroni::new(&bin)).await;
    failovers("Patroni", cluster).await;
}

/// Creates `username` without a password (so a registration email is queued); the outcome's
/// code, OK included.
async fn create(s: &TestServer, token: &str, username: &str) -> Code {
    let r = s
        .users()
        .create_user(authed(
            pb::CreateUserRequest {
                user: Some(pb::User {
                    username: username.into(),
                    email: format!("{username}@example.com"),
                    display_name: username.into(),
                    role: pb::Role::Requester as i32,
                    ..Default::default()
                }),
                initial_password: String::new(),
                require_password_change: false,
            },
            token,
        ))
        .await;
    r.map_or_else(|s| s.code(), |_| Code::Ok)
}

/// Where the writers keep what they saw.
#[derive(Default)]
struct Tally {
    acked: BTreeSet<String>,
    codes: BTreeMap<String, usize>,
}

/// A writer on one replica: users `{prefix}{n}` until stopped.
fn writer(
    s: Arc<TestServer>,
    token: String,
    prefix: &'static str,
    tally: Arc<Mutex<Tally>>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut i = 0;
        while !stop.load(Ordering::SeqCst) {
            i += 1;
            let name = format!("{prefix}{i}");
            let code = create(&s, &token, &name).await;
            {
                let mut t = tally.lock().unwrap();
                *t.codes.entry(format!("{code:?}")).or_default() += 1;
                if code == Code::Ok {
                    t.acked.insert(name);
                }
            }
            if code != Code::Ok {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    })
}

/// An environment, and a group whose members may change values in it.
async fn operators(s: &TestServer, admin: &str) -> (pb::Environment, pb::Group) {
    let p = s.portfolio(admin, "Payments").await;
    let app = s.application(admin, &p.name, "Checkout").await;
    let env = s.environment(admin, &app.name, "production").await;
    let grant = pb::EnvironmentGrant {
        environment: env.name.clone(),
        permissions: vec![pb::ValuePermission::ChangeValue as i32],
    };
    let ops = s
        .group(admin, &p.name, "Operators", vec![], vec![grant])
        .await;
    (env, ops)
}

/// A check answered by `s`, with the revision it was answered at.
async fn check(s: &TestServer, token: &str, user: &str, env: &str) -> (bool, i64) {
    let r = s
        .permissions()
        .check_permission(authed(
            pb::CheckPermissionRequest {
                check: Some(pb::PermissionCheck {
                    principal: format!("users/{user}"),
                    permission: pb::Permission::ChangeValue as i32,
                    resource: env.into(),
                }),
                min_revision: 0,
            },
            token,
        ))
        .await
        .unwrap_or_else(|st| panic!("a check needs no database: {st:?}"))
        .into_inner();
    (r.decision.unwrap().allowed, r.revision)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_failover_five_times_loses_no_acknowledged_write() {
    let Some(bin) = pg_bin() else {
        assert!(
            !fluxgate_store::testing::postgres_required(),
            "FLUXGATE_TEST_REQUIRE_POSTGRES=1 but no PostgreSQL server binaries were found \
             (/usr/lib/postgresql/*/bin, or FLUXGATE_TEST_PG_BIN)"
        );
        eprintln!(
            "SKIPPED postgres_failover: no PostgreSQL server binaries (/usr/lib/postgresql/*/bin); \
             install Debian's postgresql or set FLUXGATE_TEST_PG_BIN"
        );
        return;
    };
    let cluster = blocking(move || Cluster::new(bin)).await;
    failovers("pg_ctl promote", cluster).await;
}

/// A planned switchover: the old primary is fenced (made read-only with
/// `default_transaction_read_only`; it stays up, FluxGate's pooled connections still open to it)
/// and the standby promoted. Writes on those connections are refused as read-only and answered
/// UNAVAILABLE; FluxGate then checks each connection coming back to its pool, drops those to the
/// read-only server, and reconnects to the new primary, its change listener too: writes succeed
/// again without a restart, and nothing of FluxGate's stays connected to the fenced server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_switchover_leaves_a_fenced_primary() {
    let Some(bin) = pg_bin() else {
        assert!(
            !fluxgate_store::testing::postgres_required(),
            "FLUXGATE_TEST_REQUIRE_POSTGRES=1 but no PostgreSQL server binaries were found"
        );
        eprintln!("SKIPPED postgres_switchover: no PostgreSQL server binaries");
        return;
    };
    let cluster = Arc::new(Mutex::new(blocking(move || Cluster::new(bin)).await));
    let (mut config, dir) = test_config(&Backend::Sqlite);
    config.database_url = cluster.lock().unwrap().url();
    let s = TestServer::start_with(config, dir).await;
    let admin = s.admin_token().await;
    // Several writes at once, so that the pool holds several connections to the primary.
    let before = futures::future::join_all((0..8).map(|i| {
        let (s, admin) = (&s, &admin);
        async move { create(s, admin, &format!("before{i}")).await }
    }))
    .await;
    assert!(before.iter().all(|c| *c == Code::Ok), "{before:?}");
    let old = cluster.lock().unwrap().primary;
    let ours = move |c: &Cluster| {
        c.psql(
            old,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'fluxgate' \
             AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
        )
    };
    let c = cluster.clone();
    let open = blocking(move || ours(&c.lock().unwrap())).await;
    assert_ne!(open, "0", "FluxGate holds connections to the primary");
    let c = cluster.clone();
    blocking(move || {
        let mut c = c.lock().unwrap();
        c.psql(old, "ALTER SYSTEM SET default_transaction_read_only = on");
        c.psql(old, "ALTER SYSTEM SET synchronous_standby_names = ''");
        c.psql(old, "SELECT pg_reload_conf()");
        c.promote();
    })
    .await;
    let started = Instant::now();
    let mut refused = 0;
    let mut i = 0;
    loop {
        i += 1;
        match create(&s, &admin, &format!("after{i}")).await {
            Code::Ok => break,
            Code::Unavailable => refused += 1,
            other => panic!("a write during the switchover: {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "writes never reached the new primary"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let back = started.elapsed();
    // Keep working until every connection to the fenced server is gone (each is checked as it
    // comes back to the pool while FluxGate suspects it).
    let left = loop {
        i += 1;
        assert_eq!(create(&s, &admin, &format!("after{i}")).await, Code::Ok);
        let c = cluster.clone();
        let left = blocking(move || ours(&c.lock().unwrap())).await;
        if left == "0" || started.elapsed() > Duration::from_secs(25) {
            break left;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        left, "0",
        "FluxGate still holds connections to the fenced server"
    );
    let present: BTreeSet<String> = s
        .store()
        .read(fluxgate_store::users::all)
        .unwrap()
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert!((0..8).all(|i| present.contains(&format!("before{i}"))));
    eprintln!(
        "switchover: writes back after {} ms ({refused} refused as UNAVAILABLE), no connection \
         left to the fenced server after {} ms",
        back.as_millis(),
        started.elapsed().as_millis()
    );
    s.stop().await;
    drop(cluster);
}

/// Five failovers of `ha` under a write load through two replicas, and everything checked.
async fn failovers<H: Ha>(label: &str, ha: H) {
    let cluster = Arc::new(Mutex::new(ha));
    let url = cluster.lock().unwrap().url();
    // Both replicas send email and webhooks, retrying quickly.
    let sink = SmtpSink::start(0);
    let smtp = sink.as_ref().map(SmtpSink::url);
    let replica = |url: String| {
        let smtp = smtp.clone();
        async move {
            let (mut config, dir) = test_config(&Backend::Sqlite);
            config.database_url = url;
            config.directory_poll_ms = 100;
            config.email.smtp_url = smtp;
            config.email.retry_initial_ms = 100;
            crate::webhooks::configure(&mut config);
            Arc::new(TestServer::start_with(config, dir).await)
        }
    };
    let a = replica(url.clone()).await;
    let b = replica(url).await;
    let admin = a.admin_token().await;
    let hook = receiver(Behaviour::Accept).await;
    let subscription = subscribe(&a, &admin, &hook.url, &["user.created"])
        .await
        .webhook
        .unwrap();
    let (env, ops) = operators(a.as_ref(), &admin).await;

    // A change request watched through replica B across every failover.
    let cr = a
        .approvals()
        .submit_change_request(authed(
            pb::SubmitChangeRequestRequest {
                request_id: String::new(),
                change_request: Some(pb::ChangeRequest {
                    environment: env.name.clone(),
                    feature_key: "CHECKOUT_V2".into(),
                    kind: pb::ChangeKind::ChangeValue as i32,
                    payload: Some(prost_types::Struct {
                        fields: [(
                            "value".to_owned(),
                            prost_types::Value {
                                kind: Some(prost_types::value::Kind::BoolValue(true)),
                            },
                        )]
                        .into(),
                    }),
                    title: "Watched across failovers".into(),
                    ..Default::default()
                }),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .change_request
        .unwrap();
    let mut watch = b
        .approvals()
        .watch_change_request(authed(
            pb::WatchChangeRequestRequest {
                name: cr.name.clone(),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(
        first.change_request.unwrap().state,
        pb::ChangeRequestState::Pending as i32
    );

    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers = [
        writer(a.clone(), admin.clone(), "a", tally.clone(), stop.clone()),
        writer(b.clone(), admin.clone(), "b", tally.clone(), stop.clone()),
    ];

    let mut recoveries = Vec::new();
    // The newest revision each replica has answered at: it must never go back.
    let mut last_revision = [0i64; 2];
    for round in 0..5 {
        // A permission change before the failover: a new operator.
        let user = format!("operator{round}");
        assert_eq!(create(&a, &admin, &user).await, Code::Ok);
        a.add_member(&admin, &ops.name, &format!("users/{user}"))
            .await;
        tokio::time::sleep(Duration::from_millis(700)).await;

        let c = cluster.clone();
        blocking(move || c.lock().unwrap().kill_primary()).await;
        let killed = Instant::now();
        // No primary: checks still answer, from memory.
        if round > 0 {
            let (allowed, _) =
                check(&b, &admin, &format!("operator{}", round - 1), &env.name).await;
            assert!(allowed, "round {round}: a check during the outage");
        }
        let c = cluster.clone();
        blocking(move || c.lock().unwrap().take_over()).await;
        // Writes succeed again by themselves.
        let mut probe = 0;
        loop {
            probe += 1;
            let code = create(&a, &admin, &format!("probe{round}x{probe}")).await;
            if code == Code::Ok {
                break;
            }
            assert_eq!(
                code,
                Code::Unavailable,
                "round {round}: a write while failing over"
            );
            if killed.elapsed() > Duration::from_secs(60) {
                let why = cluster.lock().unwrap().diagnostics();
                panic!("round {round}: writes never came back\n{why}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        recoveries.push(killed.elapsed());
        let c = cluster.clone();
        blocking(move || c.lock().unwrap().rejoin()).await;

        // Every permission change made before is honoured on both replicas, at a revision at
        // least as new as any seen before.
        for (i, s) in [&a, &b].into_iter().enumerate() {
            let deadline = Instant::now() + Duration::from_secs(20);
            for r in 0..=round {
                loop {
                    let (allowed, revision) =
                        check(s, &admin, &format!("operator{r}"), &env.name).await;
                    assert!(
                        revision >= last_revision[i],
                        "replica {i}: revision {revision} after {}",
                        last_revision[i]
                    );
                    last_revision[i] = revision;
                    if allowed {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "operator{r} lost after round {round}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }

    // The watch opened before the first failover sees a change made after the last.
    a.approvals()
        .cancel_change_request(authed(
            pb::CancelChangeRequestRequest {
                name: cr.name.clone(),
                etag: String::new(),
                reason: "watched across failovers".into(),
            },
            &admin,
        ))
        .await
        .unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let m = watch
                .message()
                .await
                .unwrap()
                .expect("the watch stays open");
            if m.change_request.unwrap().state == pb::ChangeRequestState::Cancelled as i32 {
                break;
            }
        }
    })
    .await;
    assert!(seen.is_ok(), "the watch missed the cancellation");

    // Every acknowledged user is there.
    let store = a.store();
    let present: BTreeSet<String> = store
        .read(fluxgate_store::users::all)
        .unwrap()
        .into_iter()
        .map(|u| u.username)
        .collect();
    let tally = std::mem::take(&mut *tally.lock().unwrap());
    let lost: Vec<&String> = tally.acked.difference(&present).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    let caught_up = outbox_and_webhooks_caught_up(&present, sink.as_ref(), &hook).await;
    let Ok((emails, hooks)) = caught_up else {
        let list = crate::webhooks::deliveries(&a, &admin, &subscription.name).await;
        let mut states = BTreeMap::new();
        for d in &list {
            *states
                .entry((d.state, d.attempts, d.last_error.clone()))
                .or_insert(0) += 1;
        }
        let (cursor, head) = store
            .read(|c| {
                Ok::<_, fluxgate_store::StoreError>((
                    fluxgate_store::webhooks::list(c)?[0].cursor_seq,
                    fluxgate_store::audit::head_seq(c)?,
                ))
            })
            .unwrap();
        panic!(
            "the outbox or the webhooks stalled ({}); webhook cursor {cursor}, audit head \
             {head}, {} deliveries by (state, attempts, error): {states:?}",
            caught_up.unwrap_err(),
            list.len()
        );
    };
    for code in tally.codes.keys() {
        assert!(
            ["Ok", "Unavailable"].contains(&code.as_str()),
            "writers saw {:?}",
            tally.codes
        );
    }
    // The audit chain verifies on the last primary.
    let v = a
        .audit()
        .verify_audit_chain(authed(pb::VerifyAuditChainRequest::default(), &admin))
        .await
        .unwrap()
        .into_inner();
    assert!(v.valid, "{v:?}");

    // A standby reached directly (a URL without target_session_attrs): a write there is
    // UNAVAILABLE, not an error of the query.
    let standby_url = format!(
        "postgres://postgres@127.0.0.1:{}/fluxgate",
        cluster.lock().unwrap().standby_port()
    );
    let standby = fluxgate_store::Store::open(&standby_url, &Default::default()).unwrap();
    let refused =
        blocking(move || standby.write(|_| Ok::<_, fluxgate_store::StoreError>(()))).await;
    assert!(
        matches!(refused, Err(fluxgate_store::StoreError::Unavailable(_))),
        "{refused:?}"
    );

    let mut ms: Vec<u128> = recoveries.iter().map(Duration::as_millis).collect();
    ms.sort_unstable();
    eprintln!(
        "failover ({label}): writes back after {ms:?} ms (median {} ms, max {} ms); {} writes \
         acknowledged, all {} present of {} users; outcomes {:?}; audit chain of {} events valid; \
         {emails} emails and {hooks} webhooks, one or more for each user",
        ms[ms.len() / 2],
        ms[ms.len() - 1],
        tally.acked.len(),
        tally.acked.len(),
        present.len(),
        tally.codes,
        v.events_checked
    );
}

/// Waits until every user in `present` but the bootstrap admin has had its registration email
/// (when there is a sink) and its `user.created` webhook, for as long as they keep arriving;
/// the numbers of messages and webhooks received, or what is missing once nothing more has
/// arrived for 20 seconds. A message sent just before its delivery could be recorded may come
/// twice (at least once), never not at all.
async fn outbox_and_webhooks_caught_up(
    present: &BTreeSet<String>,
    sink: Option<&SmtpSink>,
    hook: &crate::webhooks::Receiver,
) -> Result<(usize, usize), String> {
    let expected: BTreeSet<&str> = present
        .iter()
        .map(String::as_str)
        .filter(|u| *u != ADMIN)
        .collect();
    let mut progress = (usize::MAX, usize::MAX);
    let mut stalled_since = Instant::now();
    loop {
        let messages = sink.map(SmtpSink::messages).unwrap_or_default();
        let mailed: BTreeSet<String> = messages
            .iter()
            .filter(|m| m.subject == "Your FluxGate account")
            .flat_map(|m| m.to.iter())
            .filter_map(|to| to.strip_suffix("@example.com").map(str::to_owned))
            .collect();
        let hits = hook.hits();
        let hooked: BTreeSet<String> = hits
            .iter()
            .filter_map(|h| {
                let v: serde_json::Value = serde_json::from_str(&h.body).ok()?;
                let after: serde_json::Value =
                    serde_json::from_str(v["data"]["afterJson"].as_str()?).ok()?;
                Some(after["username"].as_str()?.to_owned())
            })
            .collect();
        let unmailed: Vec<&&str> = expected
            .iter()
            .filter(|u| sink.is_some() && !mailed.contains(**u))
            .collect();
        let unhooked: Vec<&&str> = expected.iter().filter(|u| !hooked.contains(**u)).collect();
        if unmailed.is_empty() && unhooked.is_empty() {
            return Ok((messages.len(), hits.len()));
        }
        let now = (unmailed.len(), unhooked.len());
        if now.0 < progress.0 || now.1 < progress.1 {
            stalled_since = Instant::now();
        }
        progress = now;
        if stalled_since.elapsed() > Duration::from_secs(20) {
            return Err(format!(
                "no registration email for {} users (first {:?}), no webhook for {} (first {:?})",
                unmailed.len(),
                unmailed.first(),
                unhooked.len(),
                unhooked.first()
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A database restored from an older backup (or a standby promoted without the last changes)
/// has a change log that ends before what a replica has seen: the replica reloads everything
/// rather than waiting for revisions it believes it has, and honours the older state.
async fn a_change_log_that_went_back_is_reloaded(b: Backend) {
    use diesel::connection::SimpleConnection as _;
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    let (env, ops) = operators(&s, &admin).await;
    let rita = s
        .create_user(&admin, "rita", pb::Role::Requester, "Restore-pass-123")
        .await;
    let store = s.store();
    let before = store.read(fluxgate_store::changes::current).unwrap();
    s.add_member(&admin, &ops.name, &rita.name).await;
    assert!(check(&s, &admin, "rita", &env.name).await.0);

    // The backup from before the membership comes back.
    let group_id = ops.name.rsplit('/').next().unwrap().to_owned();
    store
        .read(|c| {
            c.batch_execute(&format!(
                "DELETE FROM change_log WHERE revision > {before};
                 DELETE FROM group_members WHERE group_id = '{group_id}'"
            ))
            .map_err(fluxgate_store::StoreError::from)
        })
        .unwrap();
    // Any write, or the next poll, finds the log behind: everything is reloaded.
    s.create_user(&admin, "nora", pb::Role::Requester, "Restore-pass-123")
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while check(&s, &admin, "rita", &env.name).await.0 {
        assert!(
            Instant::now() < deadline,
            "the replica still honours a membership the database no longer has"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        s.users()
            .get_user(authed(
                pb::GetUserRequest {
                    name: "users/nora".into()
                },
                &admin,
            ))
            .await
            .is_ok()
    );
}

crate::both_backends!(a_change_log_that_went_back_is_reloaded);

/// The PostgreSQL backup of docs/deployment.md: `pg_dump -Fc` of a running FluxGate's database,
/// `pg_restore` into a new one, and a server on it has everything from before the dump (users,
/// the audit chain) and nothing after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_dump_and_restore() {
    let Some(bin) = pg_bin() else {
        assert!(
            !fluxgate_store::testing::postgres_required(),
            "FLUXGATE_TEST_REQUIRE_POSTGRES=1 but no PostgreSQL server binaries were found"
        );
        eprintln!("SKIPPED postgres_dump_and_restore: no PostgreSQL server binaries");
        return;
    };
    let cluster = Arc::new(Mutex::new(blocking(move || Cluster::new(bin)).await));
    let url = cluster.lock().unwrap().url();
    let (mut config, dir) = test_config(&Backend::Sqlite);
    config.database_url = url.clone();
    let s = TestServer::start_with(config, dir).await;
    let admin = s.admin_token().await;
    assert_eq!(create(&s, &admin, "before").await, Code::Ok);

    let c = cluster.clone();
    blocking(move || {
        let c = c.lock().unwrap();
        let port = c.nodes[c.primary].port.to_string();
        let dump = c.root.path().join("fluxgate.dump").display().to_string();
        c.run(
            "pg_dump",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-Fc",
                "-f",
                &dump,
                "fluxgate",
            ],
        );
    })
    .await;
    assert_eq!(create(&s, &admin, "after").await, Code::Ok);
    let c = cluster.clone();
    blocking(move || {
        let c = c.lock().unwrap();
        let port = c.nodes[c.primary].port.to_string();
        let dump = c.root.path().join("fluxgate.dump").display().to_string();
        c.psql(c.primary, "CREATE DATABASE restored");
        c.run(
            "pg_restore",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                "restored",
                &dump,
            ],
        );
    })
    .await;

    let (mut config, dir) = test_config(&Backend::Sqlite);
    config.database_url = url.replace("/fluxgate?", "/restored?");
    assert_restored(config, dir).await;
}

/// A server on a restored database has user `before`, not `after`, and a valid audit chain.
async fn assert_restored(config: fluxgate_server::Config, dir: Option<tempfile::TempDir>) {
    let r = TestServer::start_with(config, dir).await;
    let admin = r.admin_token().await;
    for (name, present) in [("before", true), ("after", false)] {
        let got = r
            .users()
            .get_user(authed(
                pb::GetUserRequest {
                    name: format!("users/{name}"),
                },
                &admin,
            ))
            .await;
        assert_eq!(got.is_ok(), present, "{name}: {got:?}");
    }
    let v = r
        .audit()
        .verify_audit_chain(authed(pb::VerifyAuditChainRequest::default(), &admin))
        .await
        .unwrap()
        .into_inner();
    assert!(v.valid && v.events_checked > 0, "{v:?}");
}

/// Point-in-time recovery as docs/deployment.md has it: WAL archived beside a base backup, then
/// a new server recovered to a moment between two writes. FluxGate on it has the first write,
/// not the second, and a valid audit chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_point_in_time_recovery() {
    let Some(bin) = pg_bin() else {
        assert!(
            !fluxgate_store::testing::postgres_required(),
            "FLUXGATE_TEST_REQUIRE_POSTGRES=1 but no PostgreSQL server binaries were found"
        );
        eprintln!("SKIPPED postgres_point_in_time_recovery: no PostgreSQL server binaries");
        return;
    };
    let cluster = Arc::new(Mutex::new(blocking(move || Cluster::new(bin)).await));
    let root = cluster.lock().unwrap().root.path().to_owned();
    let archive = root.join("archive");
    // Archiving on (a restart), and a base backup.
    let c = cluster.clone();
    let arch = archive.display().to_string();
    blocking(move || {
        let c = c.lock().unwrap();
        std::fs::create_dir_all(&arch).unwrap();
        if c.as_postgres {
            let ok = Command::new("chown")
                .args(["postgres:postgres", &arch])
                .status()
                .unwrap();
            assert!(ok.success());
        }
        c.psql(0, "ALTER SYSTEM SET archive_mode = 'on'");
        c.psql(
            0,
            &format!("ALTER SYSTEM SET archive_command = 'test ! -f {arch}/%f && cp %p {arch}/%f'"),
        );
        let data = c.data(0);
        c.run("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"]);
        c.start(0);
        let port = c.nodes[0].port.to_string();
        let base = c.root.path().join("base").display().to_string();
        c.run(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-D",
                &base,
                "-X",
                "stream",
                "-c",
                "fast",
            ],
        );
    })
    .await;

    let url = cluster.lock().unwrap().url();
    let (mut config, dir) = test_config(&Backend::Sqlite);
    config.database_url = url;
    let s = TestServer::start_with(config, dir).await;
    let admin = s.admin_token().await;
    assert_eq!(create(&s, &admin, "before").await, Code::Ok);
    let c = cluster.clone();
    let target = blocking(move || c.lock().unwrap().psql(0, "SELECT now()")).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(create(&s, &admin, "after").await, Code::Ok);
    s.stop().await;
    // The WAL with both writes reaches the archive.
    let c = cluster.clone();
    let arch = archive.clone();
    blocking(move || {
        let c = c.lock().unwrap();
        let segment = c.psql(0, "SELECT pg_walfile_name(pg_switch_wal())");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !arch.join(&segment).exists() {
            assert!(Instant::now() < deadline, "{segment} never archived");
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await;

    // A new server from the base backup, recovered to `target`.
    let port = free_port();
    let c = cluster.clone();
    let (arch, pitr) = (archive.display().to_string(), root.join("pitr"));
    let pitr_dir = pitr.display().to_string();
    blocking(move || {
        let c = c.lock().unwrap();
        let ok = Command::new("cp")
            .args(["-a"])
            .arg(c.root.path().join("base"))
            .arg(&pitr)
            .status()
            .unwrap();
        assert!(ok.success());
        let auto = format!("{pitr_dir}/postgresql.auto.conf");
        let before = std::fs::read_to_string(&auto).unwrap_or_default();
        c.write_as_postgres(
            &auto,
            &format!(
                "{before}\nrestore_command = 'cp {arch}/%f %p'\n\
                 recovery_target_time = '{target}'\nrecovery_target_action = 'promote'\n\
                 synchronous_standby_names = ''\narchive_mode = 'off'\n"
            ),
        );
        c.write_as_postgres(&format!("{pitr_dir}/recovery.signal"), "");
        let log = format!("{}/pitr.log", c.root.path().display());
        c.start_folder(&pitr_dir, port, &log);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = c.try_run(
                "psql",
                &[
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                    "-Atqc",
                    "SELECT pg_is_in_recovery()",
                ],
            );
            if out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "f") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the recovered server never promoted"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await;

    let (mut config, dir) = test_config(&Backend::Sqlite);
    config.database_url = format!("postgres://postgres@127.0.0.1:{port}/fluxgate");
    assert_restored(config, dir).await;
}
