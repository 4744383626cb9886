//! Argon2id password hashing on a pool of its own: a few threads (one per CPU by default) at
//! the lowest scheduling priority, so that a login storm uses idle CPU but never delays the
//! permission checks and other requests running on the async workers.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, PasswordHash, Version};

use crate::config::HashingConfig;
use crate::error::{ApiError, ApiResult};

/// The outcome of checking a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub ok: bool,
    /// The stored hash uses other parameters than the configured ones: store a new hash.
    pub needs_rehash: bool,
}

type Job = Box<dyn FnOnce() + Send>;

/// The hashing threads. They end when the last [`Hasher`] is dropped.
struct Pool {
    jobs: mpsc::Sender<Job>,
}

impl Pool {
    fn new(threads: usize) -> anyhow::Result<Pool> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("fluxgate-argon2-{i}"))
                .spawn(move || {
                    // Lowering one's own priority needs no privilege. Where it fails, hashing
                    // still works, only without the isolation.
                    if let Err(e) = thread_priority::set_current_thread_priority(
                        thread_priority::ThreadPriority::Min,
                    ) {
                        tracing::debug!(error = ?e, "could not lower the hashing thread's priority");
                    }
                    loop {
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })?;
        }
        Ok(Pool { jobs })
    }
}

#[derive(Clone)]
pub struct Hasher {
    params: Params,
    pool: Arc<Pool>,
    /// A hash of a random password, verified against when a login names no account, so that
    /// an unknown user costs the same time as a wrong password.
    dummy: Arc<String>,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher")
            .field("params", &self.params)
            .finish()
    }
}

impl Hasher {
    pub fn new(cfg: &HashingConfig) -> anyhow::Result<Self> {
        let params = Params::new(cfg.memory_kib, cfg.iterations, cfg.parallelism, None)
            .map_err(|e| anyhow::anyhow!("password_hashing: {e}"))?;
        let threads = match cfg.max_concurrent {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let mut h = Self {
            params,
            pool: Arc::new(Pool::new(threads)?),
            dummy: Arc::new(String::new()),
        };
        let dummy = h.hash_blocking(&crate::tokens::random_token(24))?;
        h.dummy = Arc::new(dummy);
        Ok(h)
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    fn hash_blocking(&self, password: &str) -> anyhow::Result<String> {
        let hash = self
            .argon2()
            .hash_password(password.as_bytes())
            .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
        Ok(hash.to_string())
    }

    fn verify_blocking(&self, password: &str, phc: &str) -> Verified {
        let Ok(parsed) = PasswordHash::new(phc) else {
            return Verified {
                ok: false,
                needs_rehash: false,
            };
        };
        let ok = self
            .argon2()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        let needs_rehash = parsed.algorithm.as_str() != "argon2id"
            || Params::try_from(&parsed).map_or(true, |p| {
                p.m_cost() != self.params.m_cost()
                    || p.t_cost() != self.params.t_cost()
                    || p.p_cost() != self.params.p_cost()
            });
        Verified { ok, needs_rehash }
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Hasher) -> T + Send + 'static,
    ) -> ApiResult<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let me = self.clone();
        self.pool
            .jobs
            .send(Box::new(move || {
                let _ = tx.send(f(&me));
            }))
            .map_err(|_| ApiError::Unavailable("shutting down".into()))?;
        rx.await
            .map_err(|_| ApiError::Internal("a hashing thread failed".into()))
    }

    /// Hashes a new password into a PHC string.
    pub async fn hash(&self, password: String) -> ApiResult<String> {
        self.run(move |h| h.hash_blocking(&password))
            .await?
            .map_err(|e| ApiError::Internal(e.to_string()))
    }

    /// Checks `password` against a stored PHC string; with `None` (no such account, or no
    /// password set) it does the same work against a dummy hash and answers false.
    pub async fn verify(&self, password: String, phc: Option<String>) -> ApiResult<Verified> {
        self.run(move |h| match phc {
            Some(phc) => h.verify_blocking(&password, &phc),
            None => {
                let dummy = h.dummy.clone();
                h.verify_blocking(&password, &dummy);
                Verified {
                    ok: false,
                    needs_rehash: false,
                }
            }
        })
        .await
    }

    /// Blocking hash for the command-line tools.
    pub fn hash_now(&self, password: &str) -> anyhow::Result<String> {
        self.hash_blocking(password)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> HashingConfig {
        HashingConfig {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
            max_concurrent: 2,
        }
    }

    #[tokio::test]
    async fn hashes_verify_and_flag_old_parameters() {
        let h = Hasher::new(&cheap()).unwrap();
        let phc = h.hash("Correct-horse1".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{phc}");
        let v = h
            .verify("Correct-horse1".into(), Some(phc.clone()))
            .await
            .unwrap();
        assert_eq!(
            v,
            Verified {
                ok: true,
                needs_rehash: false
            }
        );
        assert!(
            !h.verify("wrong".into(), Some(phc.clone()))
                .await
                .unwrap()
                .ok
        );
        assert!(!h.verify("x".into(), None).await.unwrap().ok);
        assert!(
            !h.verify("x".into(), Some("garbage".into()))
                .await
                .unwrap()
                .ok
        );

        let stronger = Hasher::new(&HashingConfig {
            iterations: 2,
            ..cheap()
        })
        .unwrap();
        let v = stronger
            .verify("Correct-horse1".into(), Some(phc))
            .await
            .unwrap();
        assert_eq!(
            v,
            Verified {
                ok: true,
                needs_rehash: true
            }
        );
    }

    #[test]
    fn default_parameters_are_owasp() {
        let c = HashingConfig::default();
        assert!(!c.below_owasp());
        assert_eq!((c.memory_kib, c.iterations, c.parallelism), (19456, 2, 1));
    }
}
