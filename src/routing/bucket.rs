//! Sticky buckets: the xxh3 hash that maps a sticky key to 0–9999, and the
//! bucket cookie that carries a bucket for users without a key.
//!
//! The hash is part of the user contract: changing it reshuffles every
//! cohort on every replica. Golden vectors below pin it.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use xxhash_rust::xxh3::{Xxh3, xxh3_64_with_seed};

/// Number of buckets; canary iff `bucket < weight_bp`.
pub const BUCKETS: u16 = 10_000;
/// Seed of the bucket hash (documented; never change it).
pub const SEED: u64 = 0;

/// Bucket of a sticky key: `xxh3_64_with_seed(salt + "\x1f" + key, 0) % 10000`.
///
/// `salt_sep` is the salt with the `\x1f` separator already appended (built
/// once per reload). Short inputs are hashed from a stack buffer in one shot;
/// long ones stream, which gives the same digest.
pub fn bucket_of(salt_sep: &[u8], key: &[u8]) -> u16 {
    // The modulo result is < 10000, so it always fits in u16.
    (key_hash(salt_sep, key) % u64::from(BUCKETS)) as u16
}

/// The full 64-bit hash behind `bucket_of`: it also names the user, so the
/// analysis can count each user once without keeping raw keys.
pub fn key_hash(salt_sep: &[u8], key: &[u8]) -> u64 {
    // Two stack sizes: zeroing the buffer is a measurable part of the cost
    // for the usual short salt + player id.
    const SHORT: usize = 64;
    const STACK: usize = 256;
    let total = salt_sep.len() + key.len();
    if total <= SHORT {
        let mut buf = [0u8; SHORT];
        buf[..salt_sep.len()].copy_from_slice(salt_sep);
        buf[salt_sep.len()..total].copy_from_slice(key);
        xxh3_64_with_seed(&buf[..total], SEED)
    } else if total <= STACK {
        let mut buf = [0u8; STACK];
        buf[..salt_sep.len()].copy_from_slice(salt_sep);
        buf[salt_sep.len()..total].copy_from_slice(key);
        xxh3_64_with_seed(&buf[..total], SEED)
    } else {
        let mut hasher = Xxh3::with_seed(SEED);
        hasher.update(salt_sep);
        hasher.update(key);
        hasher.digest()
    }
}

/// The configured bucket cookie of a route.
#[derive(Clone)]
pub struct BucketCookie {
    pub name: String,
    pub max_age_secs: u64,
    /// Keyed HMAC state, cloned per use (keying happens once per reload).
    pub mac: Option<Hmac<Sha256>>,
}

impl std::fmt::Debug for BucketCookie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BucketCookie")
            .field("name", &self.name)
            .field("max_age_secs", &self.max_age_secs)
            .field("signed", &self.mac.is_some())
            .finish()
    }
}

/// Length of the truncated HMAC-SHA256 tag carried in the cookie, in bytes.
const TAG_LEN: usize = 16;

impl BucketCookie {
    pub fn new(name: String, max_age_secs: u64, secret: Option<&[u8]>) -> Result<Self, String> {
        let mac = match secret {
            Some([]) => return Err("the cookie secret is empty".into()),
            Some(key) => Some(Hmac::<Sha256>::new_from_slice(key).map_err(|e| format!("bad cookie secret: {e}"))?),
            None => None,
        };
        Ok(Self { name, max_age_secs, mac })
    }

    fn tag(&self, mac: &Hmac<Sha256>, bucket: u16) -> [u8; TAG_LEN] {
        let mut m = mac.clone();
        m.update(b"weir-bucket\x1f");
        m.update(bucket.to_string().as_bytes());
        let full = m.finalize().into_bytes();
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(&full[..TAG_LEN]);
        out
    }

    /// Cookie value for a bucket: `1234`, or `1234.<hex tag>` when signed.
    pub fn encode(&self, bucket: u16) -> String {
        match &self.mac {
            None => bucket.to_string(),
            Some(mac) => format!("{bucket}.{}", hex::encode(self.tag(mac, bucket))),
        }
    }

    /// The bucket a cookie value carries, if it is well formed and (when a
    /// secret is configured) correctly signed. Anything else is ignored.
    pub fn decode(&self, value: &str) -> Option<u16> {
        let (num, tag) = match value.split_once('.') {
            Some((n, t)) => (n, Some(t)),
            None => (value, None),
        };
        if num.is_empty() || num.len() > 4 || !num.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let bucket: u16 = num.parse().ok()?;
        if bucket >= BUCKETS {
            return None;
        }
        match (&self.mac, tag) {
            (None, None) => Some(bucket),
            (None, Some(_)) => None,
            (Some(_), None) => None,
            (Some(mac), Some(tag)) => {
                let given = hex::decode(tag).ok()?;
                if given.len() != TAG_LEN {
                    return None;
                }
                let mut m = mac.clone();
                m.update(b"weir-bucket\x1f");
                m.update(num.as_bytes());
                // verify_truncated_left compares in constant time.
                m.verify_truncated_left(&given).ok()?;
                Some(bucket)
            }
        }
    }

    /// The full `Set-Cookie` header value for a bucket.
    pub fn set_cookie_header(&self, bucket: u16) -> String {
        format!("{}={}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax", self.name, self.encode(bucket), self.max_age_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xxh3_golden_vectors_pin_the_hash() {
        // If these change, every user on every replica changes cohort. The
        // numbers were computed with Python's independent `xxhash` package:
        // xxhash.xxh3_64_intdigest(b"checkout\x1fplayer-42", seed=0) % 10000.
        assert_eq!(xxh3_64_with_seed(b"", 0), 0x2d06800538d394c2);
        assert_eq!(bucket_of(b"checkout\x1f", b"player-42"), golden("checkout\x1fplayer-42"));
        assert_eq!(bucket_of(b"checkout\x1f", b"player-42"), 9711);
        assert_eq!(bucket_of(b"checkout\x1f", b"alice"), 321);
        assert_eq!(bucket_of(b"other-salt\x1f", b"alice"), 8260);
    }

    fn golden(s: &str) -> u16 {
        (xxh3_64_with_seed(s.as_bytes(), 0) % 10_000) as u16
    }

    #[test]
    fn long_keys_hash_like_short_ones() {
        let salt = b"s\x1f";
        let key = vec![b'k'; 1000];
        let mut joined = salt.to_vec();
        joined.extend_from_slice(&key);
        assert_eq!(bucket_of(salt, &key), golden(std::str::from_utf8(&joined).unwrap_or("")));
    }

    #[test]
    fn unsigned_cookie_round_trips_and_rejects_junk() {
        let c = BucketCookie::new("b".into(), 60, None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.decode(&c.encode(42)), Some(42));
        assert_eq!(c.decode("9999"), Some(9999));
        for bad in ["", "10000", "-1", "12a", "00000", "1.abc", " 1"] {
            assert_eq!(c.decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn signed_cookie_rejects_forged_and_unsigned_values() {
        let c = BucketCookie::new("b".into(), 60, Some(b"secret")).unwrap_or_else(|e| panic!("{e}"));
        let good = c.encode(1234);
        assert_eq!(c.decode(&good), Some(1234));
        assert_eq!(c.decode("1234"), None, "unsigned");
        let other = BucketCookie::new("b".into(), 60, Some(b"other")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.decode(&other.encode(1234)), None, "signed with another key");
        let (_, tag) = good.split_once('.').unwrap_or_default();
        assert_eq!(c.decode(&format!("1235.{tag}")), None, "tag of another bucket");
        assert_eq!(c.decode(&format!("1234.{}", &tag[..8])), None, "truncated tag");
        assert!(c.set_cookie_header(7).starts_with("b=7."));
    }
}
