//! Argon2id password hashing on a pool of its own: a few threads (one per CPU by default) at
//! the lowest scheduling priority, so that a login storm uses idle CPU but never delays the
//! permission checks and other requests running on the async workers.
//!
//! The threads keep their Argon2 memory (19 MiB a hash at the default cost) from one hash to
//! the next while hashes keep coming, and zero and free it after [`SCRATCH_IDLE`] unused: a
//! fresh allocation per hash had the kernel fault in and zero every page of it, and return
//! them after, which cost a login about a quarter of its time on top of Argon2's own work.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::phc::{Output, ParamsString, Salt};
use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, Version};
use zeroize::Zeroize as _;

use crate::config::HashingConfig;
use crate::error::{ApiError, ApiResult};

/// The outcome of checking a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub ok: bool,
    /// The stored hash uses other parameters than the configured ones: store a new hash.
    pub needs_rehash: bool,
}

/// How long a hashing thread keeps its Argon2 memory without a hash to use it for.
pub const SCRATCH_IDLE: Duration = Duration::from_secs(2);

/// A hashing thread's Argon2 memory, reused by its hashes.
#[derive(Default)]
pub struct Scratch(Vec<Block>);

impl Scratch {
    /// `n` blocks (their contents are whatever the last hash left: Argon2 writes each block
    /// before it reads it).
    fn blocks(&mut self, n: usize) -> &mut [Block] {
        if self.0.len() < n {
            self.0.resize(n, Block::default());
        }
        &mut self.0[..n]
    }

    /// Zeroes the memory (it holds state derived from the last password) and frees it.
    fn release(&mut self) {
        self.0.zeroize();
        self.0 = Vec::new();
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        self.release();
    }
}

type Job = Box<dyn FnOnce(&mut Scratch) + Send>;

/// The Argon2 memories not in use, shared by the hashing threads (so that hashes one after
/// another use one, whichever thread runs them), each with when it was last used.
#[derive(Default)]
struct Spare(Mutex<Vec<(Instant, Scratch)>>);

impl Spare {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Instant, Scratch)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The memory last used, or an empty one.
    fn take(&self) -> Scratch {
        self.lock().pop().map(|(_, s)| s).unwrap_or_default()
    }

    fn put(&self, scratch: Scratch) {
        self.lock().push((Instant::now(), scratch));
    }

    /// Zeroes and frees the memories unused for [`SCRATCH_IDLE`].
    fn expire(&self) {
        let old: Vec<_> = {
            let mut spare = self.lock();
            let (old, keep) = std::mem::take(&mut *spare)
                .into_iter()
                .partition(|(at, _)| at.elapsed() >= SCRATCH_IDLE);
            *spare = keep;
            old
        };
        drop(old);
    }
}

/// The hashing threads. They end when the last [`Hasher`] is dropped.
struct Pool {
    jobs: mpsc::Sender<Job>,
}

impl Pool {
    fn new(threads: usize) -> anyhow::Result<Pool> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let spare = Arc::new(Spare::default());
        for i in 0..threads {
            let (rx, spare) = (rx.clone(), spare.clone());
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
                            Ok(rx) => rx.recv_timeout(SCRATCH_IDLE),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => {
                                let mut scratch = spare.take();
                                job(&mut scratch);
                                spare.put(scratch);
                            }
                            Err(mpsc::RecvTimeoutError::Timeout) => spare.expire(),
                            Err(mpsc::RecvTimeoutError::Disconnected) => return,
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
        let dummy = h.hash_blocking(&mut Scratch::default(), &crate::tokens::random_token(24))?;
        h.dummy = Arc::new(dummy);
        Ok(h)
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    fn hash_blocking(&self, scratch: &mut Scratch, password: &str) -> anyhow::Result<String> {
        let salt = argon2::password_hash::try_generate_salt()
            .map_err(|e| anyhow::anyhow!("generating a salt: {e}"))?;
        let mut buf = [0u8; Params::DEFAULT_OUTPUT_LEN];
        let blocks = scratch.blocks(self.params.block_count());
        self.argon2()
            .hash_password_into_with_memory(password.as_bytes(), &salt, &mut buf, blocks)
            .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
        let phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&self.params)
                .map_err(|e| anyhow::anyhow!("argon2: {e}"))?,
            salt: Some(Salt::new(&salt).map_err(|e| anyhow::anyhow!("argon2: {e}"))?),
            hash: Some(Output::new(&buf).map_err(|e| anyhow::anyhow!("argon2: {e}"))?),
        };
        Ok(phc.to_string())
    }

    fn verify_blocking(&self, scratch: &mut Scratch, password: &str, phc: &str) -> Verified {
        let Ok(parsed) = PasswordHash::new(phc) else {
            return Verified {
                ok: false,
                needs_rehash: false,
            };
        };
        let ok = matches(scratch, password.as_bytes(), &parsed);
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
        f: impl FnOnce(&Hasher, &mut Scratch) -> T + Send + 'static,
    ) -> ApiResult<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let me = self.clone();
        self.pool
            .jobs
            .send(Box::new(move |scratch: &mut Scratch| {
                let _ = tx.send(f(&me, scratch));
            }))
            .map_err(|_| ApiError::Unavailable("shutting down".into()))?;
        rx.await
            .map_err(|_| ApiError::Internal("a hashing thread failed".into()))
    }

    /// Hashes a new password into a PHC string.
    pub async fn hash(&self, password: String) -> ApiResult<String> {
        self.run(move |h, scratch| h.hash_blocking(scratch, &password))
            .await?
            .map_err(|e| ApiError::Internal(e.to_string()))
    }

    /// Checks `password` against a stored PHC string; with `None` (no such account, or no
    /// password set) it does the same work against a dummy hash and answers false.
    pub async fn verify(&self, password: String, phc: Option<String>) -> ApiResult<Verified> {
        self.run(move |h, scratch| match phc {
            Some(phc) => h.verify_blocking(scratch, &password, &phc),
            None => {
                let dummy = h.dummy.clone();
                h.verify_blocking(scratch, &password, &dummy);
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
        self.hash_blocking(&mut Scratch::default(), password)
    }
}

/// Whether `password` hashes to the stored `parsed` (any Argon2 variant, version and cost),
/// in `scratch`'s memory; the outputs are compared in constant time.
fn matches(scratch: &mut Scratch, password: &[u8], parsed: &PasswordHash) -> bool {
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm.as_str()) else {
        return false;
    };
    let Ok(version) = parsed
        .version
        .map_or(Ok(Version::default()), Version::try_from)
    else {
        return false;
    };
    let Ok(params) = Params::try_from(parsed) else {
        return false;
    };
    let mut buf = [0u8; Output::MAX_LENGTH];
    let Some(out) = buf.get_mut(..expected.len()) else {
        return false;
    };
    let blocks = scratch.blocks(params.block_count());
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password, salt, out, blocks)
        .is_ok()
        && Output::new(out).is_ok_and(|computed| computed == *expected)
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

    /// Hashes made in reused (dirty) memory are the ones Argon2's own API makes and accepts,
    /// whatever cost the previous hash in that memory had.
    #[test]
    fn reused_memory_hashes_as_argon2_itself_does() {
        use argon2::{PasswordHasher as _, PasswordVerifier as _};
        let mut scratch = Scratch::default();
        for (m, t) in [(256, 2), (64, 1), (512, 1), (64, 3)] {
            let h = Hasher::new(&HashingConfig {
                memory_kib: m,
                iterations: t,
                ..cheap()
            })
            .unwrap();
            let ours = h.hash_blocking(&mut scratch, "Correct-horse1").unwrap();
            assert!(
                ours.starts_with(&format!("$argon2id$v=19$m={m},t={t},p=1$")),
                "{ours}"
            );
            h.argon2()
                .verify_password(b"Correct-horse1", &PasswordHash::new(&ours).unwrap())
                .unwrap();
            let theirs = h
                .argon2()
                .hash_password(b"Correct-horse1")
                .unwrap()
                .to_string();
            for phc in [&ours, &theirs] {
                assert!(h.verify_blocking(&mut scratch, "Correct-horse1", phc).ok);
                assert!(!h.verify_blocking(&mut scratch, "Correct-horse2", phc).ok);
            }
            // Another variant and version, as an imported hash may have.
            let argon2i = Argon2::new(Algorithm::Argon2i, Version::V0x10, h.params.clone())
                .hash_password(b"Correct-horse1")
                .unwrap()
                .to_string();
            let v = h.verify_blocking(&mut scratch, "Correct-horse1", &argon2i);
            assert!(v.ok && v.needs_rehash, "{argon2i}");
            assert!(!h.verify_blocking(&mut scratch, "wrong", &argon2i).ok);
        }
        assert!(!scratch.0.is_empty());
        scratch.release();
        assert!(scratch.0.is_empty() && scratch.0.capacity() == 0);
    }

    /// Memory is shared while in use and freed once unused for `SCRATCH_IDLE`.
    #[test]
    fn spare_memory_expires_when_unused() {
        let spare = Spare::default();
        let mut used = spare.take();
        used.blocks(8);
        spare.put(used);
        let again = spare.take();
        assert_eq!(again.0.len(), 8, "the memory last used is taken again");
        spare.put(again);
        spare.expire();
        assert_eq!(spare.lock().len(), 1, "recently used memory is kept");
        let old = Instant::now()
            .checked_sub(SCRATCH_IDLE + Duration::from_millis(10))
            .unwrap();
        spare.lock()[0].0 = old;
        spare.expire();
        assert!(
            spare.lock().is_empty(),
            "memory unused for SCRATCH_IDLE is freed"
        );
    }

    #[test]
    fn default_parameters_are_owasp() {
        let c = HashingConfig::default();
        assert!(!c.below_owasp());
        assert_eq!((c.memory_kib, c.iterations, c.parallelism), (19456, 2, 1));
    }
}
