//! Password hashing with argon2id, off the async runtime (each hash costs tens of
//! milliseconds of CPU and ~19 MiB of memory by design).
//!
//! Memory: a burst of sign-ups or sign-ins once left the service at 1.4 GiB. Two causes, two
//! fixes:
//! - How many buffers are alive at once: at most one hash per core runs (more only share
//!   the same cores, finishing no sooner, while each holds its 19 MiB).
//! - Whether a freed buffer leaves the process: see [`give_big_buffers_back_to_the_os`].

use crate::config::PasswordConfig;
use crate::error::AuthError;
use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

#[derive(Clone)]
pub struct Passwords {
    argon2: Arc<Argon2<'static>>,
    /// Bounds concurrent hashes to one per core: each holds ~19 MiB and a core, so an
    /// unbounded burst (a flood of wrong passwords) would exhaust memory and starve every
    /// other request, and more than one per core adds memory, not throughput.
    permits: Arc<Semaphore>,
    /// A real hash of a random password: verifying against it when the email is unknown makes
    /// "no such user" cost the same time as "wrong password".
    dummy_hash: Arc<str>,
}

impl Passwords {
    pub async fn new(config: &PasswordConfig) -> Result<Self, AuthError> {
        let params = Params::new(
            config.memory_kib,
            config.iterations,
            config.parallelism,
            None,
        )
        .map_err(|e| AuthError::Internal(format!("argon2 parameters: {e}")))?;
        let argon2 = Arc::new(Argon2::new(Algorithm::Argon2id, Version::V0x13, params));
        give_big_buffers_back_to_the_os();
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut passwords = Self {
            argon2,
            permits: Arc::new(Semaphore::new(cores)),
            dummy_hash: Arc::from(""),
        };
        let random = uuid::Uuid::new_v4().to_string();
        passwords.dummy_hash = Arc::from(passwords.hash(random).await?);
        Ok(passwords)
    }

    /// A PHC string (`$argon2id$v=19$m=...$salt$hash`) with a fresh random salt.
    pub async fn hash(&self, password: String) -> Result<String, AuthError> {
        let _permit = self.permit().await?;
        let argon2 = Arc::clone(&self.argon2);
        tokio::task::spawn_blocking(move || {
            argon2
                .hash_password(password.as_bytes())
                .map(|h| h.to_string())
        })
        .await
        .map_err(|e| AuthError::Internal(e.to_string()))?
        .map_err(|e| AuthError::Internal(format!("hashing: {e}")))
    }

    /// Whether `password` matches `hash`; with `None` (unknown user) it checks against the
    /// dummy hash and answers false, taking the same time.
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, AuthError> {
        let _permit = self.permit().await?;
        let argon2 = Arc::clone(&self.argon2);
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy_hash.to_string());
        let matches = tokio::task::spawn_blocking(move || {
            argon2
                .verify_password(password.as_bytes(), hash.as_str())
                .is_ok()
        })
        .await
        .map_err(|e| AuthError::Internal(e.to_string()))?;
        Ok(known && matches)
    }
}

impl Passwords {
    /// A hashing slot, waited for at most 2 s; past that the service is overloaded (503).
    async fn permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, AuthError> {
        tokio::time::timeout(Duration::from_secs(2), self.permits.acquire())
            .await
            .map_err(|_| AuthError::Busy)?
            .map_err(|_| AuthError::Busy)
    }
}

/// Allocations of at least this size get a mapping of their own (see below). Far below an
/// argon2 buffer (19 MiB by default), far above what a request handler allocates.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 1024 * 1024;

/// Makes freed argon2 buffers leave the process.
///
/// glibc serves an allocation from its heaps unless it is at least `M_MMAP_THRESHOLD` bytes,
/// which then gets a mapping of its own, unmapped when freed. By default that threshold
/// starts at 128 KiB and rises to the size of every mapped block freed, up to 32 MiB
/// (mallopt(3)). So once the first argon2 buffer is freed, the following ones come from the
/// heaps of glibc's per-thread arenas (up to 8 per core), and those keep them: a burst of
/// hashes on the blocking pool's threads left 1.4 GiB resident for good. Setting the threshold
/// explicitly turns the adjustment off: every buffer is mapped, and unmapped when the hash
/// is done. The price is the page faults of a fresh mapping per hash, small next to the hash.
///
/// Why not reuse a fixed pool of argon2 blocks (`hash_password_into_with_memory`)? It would
/// keep one 19 MiB buffer per core resident while idle (beyond the idle memory budget), and
/// the PHC string encoding and verification around it would have to be written by hand.
/// A different global allocator would change every allocation of the service for this one.
///
/// Process-wide and idempotent; called by [`Passwords::new`], so every process that hashes
/// (the service, tests) has it.
pub fn give_big_buffers_back_to_the_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt takes no pointers and only changes the allocator's parameters,
        // under the allocator's own lock; any value is valid for M_MMAP_THRESHOLD.
        #[allow(unsafe_code)]
        let changed = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
        if changed != 1 {
            tracing::warn!(
                "mallopt(M_MMAP_THRESHOLD) failed: freed hash buffers may stay resident"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PasswordConfig {
        PasswordConfig {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        }
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let passwords = Passwords::new(&cheap()).await.unwrap();
        let hash = passwords.hash("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{hash}");
        assert!(
            passwords
                .verify("correct horse".into(), Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(
            !passwords
                .verify("wrong horse".into(), Some(hash))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn unknown_users_never_verify() {
        let passwords = Passwords::new(&cheap()).await.unwrap();
        assert!(!passwords.verify("anything".into(), None).await.unwrap());
    }
}
