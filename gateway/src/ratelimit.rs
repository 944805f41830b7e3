//! Per-client rate limits (GCRA, from `governor`) on the routes that invite guessing.

use crate::config::RateLimitConfig;
use axum::http::HeaderMap;
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

pub struct ClientLimiter {
    limiter: RateLimiter<IpAddr, DashMapStateStore<IpAddr>, DefaultClock>,
    trusted_proxies: Vec<IpAddr>,
}

impl ClientLimiter {
    pub fn new(config: &RateLimitConfig) -> Arc<Self> {
        let per_minute = NonZeroU32::new(config.per_minute.max(1)).expect("at least 1");
        let burst = NonZeroU32::new(config.burst.max(1)).expect("at least 1");
        let limiter = Arc::new(Self {
            limiter: RateLimiter::keyed(Quota::per_minute(per_minute).allow_burst(burst)),
            trusted_proxies: config.trusted_proxies.clone(),
        });
        // Forget clients that have been quiet long enough to be back at a full burst.
        let weak = Arc::downgrade(&limiter);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(limiter) => limiter.limiter.retain_recent(),
                    None => return,
                }
            }
        });
        limiter
    }

    /// `Ok` to go ahead, or how long the client must wait.
    pub fn check(&self, peer: SocketAddr, headers: &HeaderMap) -> Result<(), Duration> {
        let client = bucket(self.client_ip(peer, headers));
        self.limiter
            .check_key(&client)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    pub fn is_trusted_proxy(&self, peer: IpAddr) -> bool {
        self.trusted_proxies.contains(&peer)
    }

    /// The peer, unless it is a trusted proxy: then the address it appended to
    /// `X-Forwarded-For` (the last one; earlier entries are the client's own say-so).
    fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.ip();
        if !self.trusted_proxies.contains(&peer) {
            return peer;
        }
        headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|ip| ip.trim().parse().ok())
            .next_back()
            .unwrap_or(peer)
    }
}

/// The unit a limit applies to: one IPv4 address, or one IPv6 /64 (what a single customer
/// line gets; counting its addresses one by one would give it 2^64 budgets).
fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let mut segments = v6.segments();
            segments[4..].fill(0);
            IpAddr::V6(segments.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_minute: u32, burst: u32, trusted: &[&str]) -> Arc<ClientLimiter> {
        ClientLimiter::new(&RateLimitConfig {
            per_minute,
            burst,
            trusted_proxies: trusted.iter().map(|ip| ip.parse().unwrap()).collect(),
        })
    }

    #[tokio::test]
    async fn a_client_past_its_burst_waits_while_others_go_ahead() {
        let limiter = limiter(6, 2, &[]);
        let a: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        let none = HeaderMap::new();
        assert!(limiter.check(a, &none).is_ok());
        assert!(limiter.check(a, &none).is_ok());
        let wait = limiter.check(a, &none).unwrap_err();
        assert!(
            wait > Duration::from_secs(5) && wait <= Duration::from_secs(10),
            "{wait:?}"
        );
        assert!(limiter.check(b, &none).is_ok());
    }

    #[tokio::test]
    async fn one_ipv6_network_shares_one_budget() {
        let limiter = limiter(60, 1, &[]);
        let none = HeaderMap::new();
        assert!(
            limiter
                .check("[2001:db8:1:2::1]:1".parse().unwrap(), &none)
                .is_ok()
        );
        assert!(
            limiter
                .check("[2001:db8:1:2::ffff]:1".parse().unwrap(), &none)
                .is_err()
        );
        assert!(
            limiter
                .check("[2001:db8:1:3::1]:1".parse().unwrap(), &none)
                .is_ok()
        );
    }

    #[tokio::test]
    async fn forwarded_for_counts_only_from_trusted_proxies() {
        let limiter = limiter(60, 1, &["10.0.0.9"]);
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "1.1.1.1, 2.2.2.2".parse().unwrap());
        let proxy: SocketAddr = "10.0.0.9:1".parse().unwrap();
        let stranger: SocketAddr = "10.0.0.8:1".parse().unwrap();
        assert_eq!(
            limiter.client_ip(proxy, &headers),
            "2.2.2.2".parse::<IpAddr>().unwrap()
        );
        assert_eq!(limiter.client_ip(stranger, &headers), stranger.ip());
    }
}
