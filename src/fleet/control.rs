//! Steering shared through Prometheus: one number per (route, revision)
//! that only ever needs a `max` to merge. A higher epoch wins (`resume` and
//! `unkill` raise it); at one epoch a stronger latch wins: rolled back over
//! killed over paused over running.

use crate::analysis::machine::RouteState;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Control {
    pub epoch: u64,
    /// 0 running, 1 paused, 2 killed, 3 rolled back.
    pub rank: u8,
}

pub const RUNNING: u8 = 0;
pub const PAUSED: u8 = 1;
pub const KILLED: u8 = 2;
pub const ROLLED_BACK: u8 = 3;

/// Epochs stay far below 2^50, so the encoding is exact in an f64.
const MAX_EPOCH: u64 = 1 << 50;

impl Control {
    pub fn encode(self) -> u64 {
        self.epoch.min(MAX_EPOCH) * 4 + u64::from(self.rank.min(ROLLED_BACK))
    }

    pub fn decode(v: f64) -> Self {
        if !v.is_finite() || v < 0.0 {
            return Self::default();
        }
        let v = (v.round() as u64).min(MAX_EPOCH * 4 + 3);
        Self { epoch: v / 4, rank: (v % 4) as u8 }
    }

    /// The rank a state is in.
    pub fn rank_of(st: &RouteState) -> u8 {
        if st.rolled_back.is_some() {
            ROLLED_BACK
        } else if st.killed {
            KILLED
        } else if st.paused {
            PAUSED
        } else {
            RUNNING
        }
    }
}

/// `weir_rollout_position`: epoch × 1024 + step.
pub fn position(epoch: u64, step: Option<usize>) -> u64 {
    epoch.min(MAX_EPOCH / 1024) * 1024 + step.map_or(0, |s| s.min(1023) as u64)
}

pub fn decode_position(p: u64) -> (u64, usize) {
    (p / 1024, (p % 1024) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_of_encodings_is_the_merge() {
        let all = [
            Control { epoch: 0, rank: RUNNING },
            Control { epoch: 0, rank: PAUSED },
            Control { epoch: 0, rank: ROLLED_BACK },
            Control { epoch: 1, rank: RUNNING },
            Control { epoch: 1, rank: KILLED },
            Control { epoch: 7, rank: ROLLED_BACK },
        ];
        for a in all {
            assert_eq!(Control::decode(a.encode() as f64), a);
            for b in all {
                assert_eq!(a.max(b).encode(), a.encode().max(b.encode()), "{a:?} {b:?}");
            }
        }
        assert_eq!(Control::decode(f64::NAN), Control::default());
        assert_eq!(Control::decode(-3.0), Control::default());
        assert_eq!(decode_position(position(3, Some(2))), (3, 2));
    }
}
