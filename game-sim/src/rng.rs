//! A small, fast pseudo-random generator (SplitMix64): reproducible from a seed for the
//! activity mix, seeded from the OS for message ids.

pub struct Rng(u64);

impl Rng {
    pub fn seeded(seed: u64) -> Self {
        Self(seed)
    }

    /// Seeded from the operating system's random source.
    pub fn from_os() -> Self {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).expect("the OS random source is available");
        Self(u64::from_le_bytes(bytes))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A time-ordered (version 7) UUID for a message made at `now_ms`: ids made close in time
    /// sort close together, so the consumer's inbox index grows at its end instead of at
    /// random places all over it (see README, "Message ids").
    pub fn uuid_v7(&mut self, now_ms: i64) -> uuid::Uuid {
        let mut random = [0u8; 10];
        random[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        random[8..].copy_from_slice(&self.next_u64().to_le_bytes()[..2]);
        uuid::Builder::from_unix_timestamp_millis(now_ms.max(0) as u64, &random).into_uuid()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_below_stays_in_range() {
        let (mut a, mut b) = (Rng::seeded(7), Rng::seeded(7));
        for _ in 0..1000 {
            assert_eq!(a.next_u64(), b.next_u64());
            assert!(a.below(5) < 5);
            b.below(5);
        }
    }

    #[test]
    fn uuids_are_version_7_distinct_and_ordered_by_their_millisecond() {
        let mut rng = Rng::from_os();
        let (x, y) = (rng.uuid_v7(1_000), rng.uuid_v7(1_000));
        assert_eq!(x.get_version_num(), 7);
        assert_ne!(x, y);
        assert!(rng.uuid_v7(1_001) > x.max(y));
        assert_eq!(x.get_timestamp().map(|t| t.to_unix().0), Some(1));
    }
}
