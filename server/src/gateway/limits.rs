//! Login rate limits (per IP address, per device or account): token
//! buckets kept in memory by each gateway. A gateway refuses what goes
//! over with `too_many_logins` and a `Retry-After`; several gateways side
//! by side each allow their share, which is what a load balancer spreads.

use std::collections::HashMap;
use std::sync::Mutex;

/// Logins one IP address may make per minute, by default: a mobile
/// carrier puts thousands of players behind one address, so this is far
/// above one person, and still stops one machine from trying device
/// secrets or making accounts by the thousand.
pub const LOGINS_PER_ADDRESS_PER_MINUTE: u32 = 600;

/// Logins of one device or account per minute, by default: a person logs
/// in a few times an hour; this leaves room for a reconnecting client and
/// stops a guessing run on one device's secret.
pub const LOGINS_PER_ACCOUNT_PER_MINUTE: u32 = 12;

/// Keys (addresses, accounts) tracked at once. Beyond it, buckets that
/// are full again are dropped first, then the oldest tenth: memory stays bounded
/// whatever the number of addresses a flood comes from.
pub const KEYS_MAX: usize = 100_000;

/// One bucket: tokens left and when it was last filled (ms).
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ms: i64,
}

/// Token buckets of `per_minute` tokens each, refilled continuously.
#[derive(Debug)]
pub struct Buckets {
    per_minute: u32,
    keys: Mutex<HashMap<String, Bucket>>,
}

impl Buckets {
    pub fn new(per_minute: u32) -> Buckets {
        Buckets { per_minute: per_minute.max(1), keys: Mutex::new(HashMap::new()) }
    }

    fn refilled(&self, b: Bucket, now_ms: i64) -> Bucket {
        let per_ms = f64::from(self.per_minute) / 60_000.0;
        let tokens = (b.tokens + (now_ms - b.at_ms).max(0) as f64 * per_ms).min(f64::from(self.per_minute));
        Bucket { tokens, at_ms: now_ms.max(b.at_ms) }
    }

    /// Takes one token for `key` at `now_ms`: `Ok`, or `Err(seconds)`
    /// until one is there again.
    pub fn take(&self, key: &str, now_ms: i64) -> Result<(), u64> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if keys.len() >= KEYS_MAX && !keys.contains_key(key) {
            let full = f64::from(self.per_minute);
            keys.retain(|_, b| self.refilled(*b, now_ms).tokens < full);
            if keys.len() >= KEYS_MAX {
                // The oldest tenth goes at once, so that a flood pays for
                // this scan once per KEYS_MAX / 10 new keys.
                let mut times: Vec<i64> = keys.values().map(|b| b.at_ms).collect();
                let cut = *times.select_nth_unstable(KEYS_MAX / 10).1;
                keys.retain(|_, b| b.at_ms > cut);
            }
        }
        let full = Bucket { tokens: f64::from(self.per_minute), at_ms: now_ms };
        let b = self.refilled(keys.get(key).copied().unwrap_or(full), now_ms);
        if b.tokens < 1.0 {
            keys.insert(key.to_string(), b);
            let per_s = f64::from(self.per_minute) / 60.0;
            return Err(((1.0 - b.tokens) / per_s).ceil().max(1.0) as u64);
        }
        keys.insert(key.to_string(), Bucket { tokens: b.tokens - 1.0, ..b });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_rate_refuses_beyond_and_refills() {
        let b = Buckets::new(6);
        for _ in 0..6 {
            assert_eq!(b.take("ip", 0), Ok(()));
        }
        assert_eq!(b.take("ip", 0), Err(10), "one token comes back every 10 s");
        assert_eq!(b.take("other", 0), Ok(()), "per key");
        assert_eq!(b.take("ip", 9_000), Err(1));
        assert_eq!(b.take("ip", 10_000), Ok(()));
        assert_eq!(b.take("ip", 10_000), Err(10));
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_keys() {
        let b = Buckets::new(1);
        for i in 0..KEYS_MAX + 10 {
            let _ = b.take(&format!("k{i}"), i as i64);
        }
        assert!(b.keys.lock().unwrap().len() <= KEYS_MAX);
    }
}
