//! Argon2 at its production cost (19 MiB per hash) under a burst of concurrent sign-ups and
//! sign-ins: at most one buffer per core is alive at a time, and the buffers go back to the
//! OS afterwards instead of staying in the allocator's arenas (where a mass registration
//! leaves the service at about 1.4 GiB).
//!
//! A test binary of its own: the figures are the whole process's, so nothing else may run in
//! it.

use auth::config::PasswordConfig;
use auth::passwords::Passwords;

const MIB: u64 = 1024 * 1024;

/// A `/proc/self/status` figure (`VmRSS`, `VmHWM`) in bytes.
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|line| line.starts_with(field) && line[field.len()..].starts_with(':'))
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"));
    let kib: u64 = line[field.len() + 1..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .expect("a number of kB");
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_hashes_holds_one_buffer_per_core_and_gives_them_back() {
    let config = PasswordConfig::default();
    let buffer = u64::from(config.memory_kib) * 1024;
    let passwords = Passwords::new(&config).await.expect("argon2 parameters");
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let before = status_bytes("VmRSS");

    // Far more callers than cores, as when thousands of players register at once.
    let callers = (4 * cores).max(16);
    let burst: Vec<_> = (0..callers)
        .map(|i| {
            let passwords = passwords.clone();
            tokio::spawn(async move {
                let password = format!("password {i}");
                let hash = passwords.hash(password.clone()).await.expect("a hash");
                assert!(
                    passwords
                        .verify(password, Some(hash))
                        .await
                        .expect("verified")
                );
            })
        })
        .collect();
    for caller in burst {
        caller.await.expect("no caller panicked");
    }

    let peak = status_bytes("VmHWM").saturating_sub(before);
    let after = status_bytes("VmRSS").saturating_sub(before);
    eprintln!(
        "{callers} callers, {cores} cores, {} MiB per hash: peak +{} MiB, after +{} MiB",
        buffer / MIB,
        peak / MIB,
        after / MIB
    );
    // One buffer per core, plus room for thread stacks and the allocator's small change.
    assert!(
        peak <= cores * buffer + 16 * MIB,
        "peak RSS rose by {} MiB: more than {cores} hashes ran at once",
        peak / MIB
    );
    assert!(
        after < buffer / 2,
        "RSS stayed {} MiB above where it started: the hash buffers were not given back",
        after / MIB
    );
}
