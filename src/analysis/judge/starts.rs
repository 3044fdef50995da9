//! How a test's α share is spread over start times: most on the revision's
//! start, the rest over later epochs, so a late regression is caught about
//! as fast as one at the start.

/// Epochs that share the late-start weight evenly (then it thins).
pub const FLAT_STARTS: u32 = 60;

/// Weight of scope `epoch` (0 = the revision) in a test's mixture: ¾ on
/// the revision; ¼ · 1/(2H) on each epoch s ≤ H (H = `FLAT_STARTS`), and
/// ¼ · H/(2s(s+1)) on each later one. Sum over s ≥ 1: ¼ · (½ + H/(2(H+1))) < ¼.
pub fn start_weight(epoch: u32) -> f64 {
    let h = f64::from(FLAT_STARTS);
    let s = f64::from(epoch);
    match epoch {
        0 => 0.75,
        e if e <= FLAT_STARTS => 0.25 / (2.0 * h),
        _ => 0.25 * h / (2.0 * s * (s + 1.0)),
    }
}

/// The weighted e-value (w_s·e_s) at which a start fires: `k / alpha`.
pub fn weighted_threshold(alpha: f64, k: usize) -> f64 {
    k.max(1) as f64 / alpha
}

/// The e-value at which scope `epoch` fires: K/(α·w_s).
pub fn threshold(alpha: f64, k: usize, epoch: u32) -> f64 {
    // Multiply before dividing, so the figures read round.
    (1.0 / start_weight(epoch)) * k.max(1) as f64 / alpha
}
