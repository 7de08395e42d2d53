//! Rotary position embeddings (RoPE), in Hugging Face's Llama convention (`rotate_half`):
//! in each head of HS channels, channel i pairs with channel i + HS/2 (not i + 1), and the
//! pair at position pos turns by θ = pos · inv_freq[i], i < HS/2.
//!
//! Layout: x (B, T, stride), rotated in place. B sequences of T positions, position t at
//! pos0 + t (pos0 > 0 for a KV-cache decode step); each position is a row of `stride`
//! floats whose first `heads` heads of HS channels are turned and the rest left as they
//! are. For the fused qkv (B, T, 3C) that attention reads, heads = 2·NH (q's heads then
//! k's lie together at the start of each row; v follows, untouched); for a grouped-query
//! qkv (B, T, (NH + 2·NKV)·HS), heads = NH + NKV.
//!
//! The frequencies are computed here on the host ([`rope_inv_freq`]) and handed to the
//! kernel as a buffer, so plain RoPE and Llama 3's scaled RoPE share one kernel.

use super::{cst, for_chunks, Float};

/// How a model stretches RoPE's frequencies for contexts past the one it was trained on
/// (`rope_scaling`, or `rope_parameters` in newer configs, of a Hugging Face config.json).
/// Only inv_freq changes; the kernel is the same.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum RopeScaling {
    /// No scaling (`"rope_type": "default"`, or no `rope_scaling` at all).
    None,
    /// `"rope_type": "llama3"` (Llama 3.1 and 3.2): low frequencies (wavelength past
    /// original_max_position_embeddings / low_freq_factor) divided by `factor`, high ones
    /// (wavelength under original_max_position_embeddings / high_freq_factor) kept, those
    /// between blended smoothly.
    Llama3 { factor: f64, low_freq_factor: f64, high_freq_factor: f64, original_max_position_embeddings: f64 },
}

/// inv_freq (HS/2): 1 / theta^(2i / HS) for i < HS/2 (theta is the config's `rope_theta`),
/// then scaled as transformers' `_compute_default_rope_parameters` and
/// `_compute_llama3_parameters` do. Computed in f64 and rounded once to f32 (transformers
/// computes in f32, so an element may differ from its by an ulp).
pub fn rope_inv_freq(head_size: usize, theta: f64, scaling: RopeScaling) -> Vec<f32> {
    assert!(head_size % 2 == 0, "RoPE needs an even head size, got {head_size}");
    let plain = (0..head_size / 2).map(|i| 1.0 / theta.powf((2 * i) as f64 / head_size as f64));
    let scaled = plain.map(|inv_freq| match scaling {
        RopeScaling::None => inv_freq,
        RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings: old } => {
            let (low_freq_wavelen, high_freq_wavelen) = (old / low_freq_factor, old / high_freq_factor);
            let wavelen = 2.0 * std::f64::consts::PI / inv_freq;
            if wavelen < high_freq_wavelen {
                inv_freq
            } else if wavelen > low_freq_wavelen {
                inv_freq / factor
            } else {
                let smooth = (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                (1.0 - smooth) * inv_freq / factor + smooth * inv_freq
            }
        }
    });
    scaled.map(|f| f as f32).collect()
}

/// Turns every pair of x (B, T, stride) by sign · θ, in place (see the module's layout).
fn rotate<F: Float>(
    x: &mut [F],
    inv_freq: &[F],
    b: usize,
    t: usize,
    stride: usize,
    heads: usize,
    hs: usize,
    pos0: usize,
    sign: F,
) {
    assert!(hs % 2 == 0 && heads * hs <= stride && inv_freq.len() >= hs / 2);
    let half = hs / 2;
    // one position (row) per task
    for_chunks(&mut x[..b * t * stride], stride, |row, x| {
        let pos = cst::<F>((pos0 + row % t) as f64);
        for i in 0..half {
            // every head of the row turns pair i by the same angle
            let (sin, cos) = (pos * inv_freq[i]).sin_cos();
            let sin = sign * sin;
            for head in x[..heads * hs].chunks_exact_mut(hs) {
                let (x1, x2) = (head[i], head[i + half]);
                head[i] = x1 * cos - x2 * sin;
                head[i + half] = x2 * cos + x1 * sin;
            }
        }
    });
}

/// x (B, T, stride) ← RoPE(x) in place: in the first `heads` heads of HS channels of each
/// row, (x[i], x[i + HS/2]) turned by θ = (pos0 + t) · inv_freq[i].
pub fn rope_forward<F: Float>(
    x: &mut [F],
    inv_freq: &[F],
    b: usize,
    t: usize,
    stride: usize,
    heads: usize,
    hs: usize,
    pos0: usize,
) {
    rotate(x, inv_freq, b, t, stride, heads, hs, pos0, F::one());
}

/// dx (B, T, stride) ← the gradient through [`rope_forward`], in place: the same pairs
/// turned by −θ (a rotation's transpose is its inverse). Needs nothing from the forward pass.
pub fn rope_backward<F: Float>(
    dx: &mut [F],
    inv_freq: &[F],
    b: usize,
    t: usize,
    stride: usize,
    heads: usize,
    hs: usize,
    pos0: usize,
) {
    rotate(dx, inv_freq, b, t, stride, heads, hs, pos0, -F::one());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: &[f32], want: &[f64]) {
        assert_eq!(got.len(), want.len());
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!((g as f64 - w).abs() <= 1e-7 * w.abs(), "inv_freq[{i}] = {g}, expected {w}");
        }
    }

    /// Hugging Face's `q * cos + rotate_half(q) * sin`, rotate_half(q) = cat(−q[HS/2:], q[:HS/2]),
    /// by hand on one head of 4: pairs (0, 2) and (1, 3); what lies past `heads` heads stays.
    #[test]
    fn rope_pairs_channel_i_with_i_plus_half_as_rotate_half_does() {
        // B = 1, T = 2 at positions 7, 8; rows of 6: one head of 4 turned, 2 channels kept
        let inv_freq = [0.5, 0.01];
        let mut x = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, -1.0, -2.0, -3.0, -4.0, -5.0, -6.0];
        rope_forward(&mut x, &inv_freq, 1, 2, 6, 1, 4, 7);
        let turned = |pos: f64, q: [f64; 4]| {
            let (a, b) = (pos * 0.5, pos * 0.01);
            [
                q[0] * a.cos() - q[2] * a.sin(),
                q[1] * b.cos() - q[3] * b.sin(),
                q[2] * a.cos() + q[0] * a.sin(),
                q[3] * b.cos() + q[1] * b.sin(),
            ]
        };
        let want: Vec<f64> = [&turned(7.0, [1.0, 2.0, 3.0, 4.0])[..], &[5.0, 6.0], &turned(8.0, [-1.0, -2.0, -3.0, -4.0]), &[-5.0, -6.0]]
            .concat();
        for (i, (&got, &want)) in x.iter().zip(&want).enumerate() {
            assert!((got - want).abs() < 1e-12, "x[{i}] = {got}, expected {want}");
        }
        // and the backward pass turns it back
        rope_backward(&mut x, &inv_freq, 1, 2, 6, 1, 4, 7);
        let start = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, -1.0, -2.0, -3.0, -4.0, -5.0, -6.0];
        assert!(x.iter().zip(start).all(|(a, b)| (a - b).abs() < 1e-12), "{x:?}");
    }

    #[test]
    fn plain_inv_freq_is_one_over_theta_to_the_2i_over_hs() {
        // HS = 8, theta = 10⁴: 10⁴^(−0/8, −2/8, −4/8, −6/8)
        close(&rope_inv_freq(8, 10_000.0, RopeScaling::None), &[1.0, 0.1, 0.01, 0.001]);
        // HS = 4, theta = 100: 100^(0, −1/2)
        close(&rope_inv_freq(4, 100.0, RopeScaling::None), &[1.0, 0.1]);
    }

    #[test]
    fn llama3_scaling_keeps_high_divides_low_and_blends_the_middle() {
        // HS = 8, theta = 10⁴: inv_freq 1, 0.1, 0.01, 0.001, wavelengths 2π/inv_freq =
        // 6.28, 62.8, 628.3, 6283. With original_max_position_embeddings 1000, low 1 and
        // high 4: low_freq_wavelen = 1000, high_freq_wavelen = 250. So
        //   6.28, 62.8 < 250   kept:         1, 0.1
        //   6283 > 1000        divided by 8: 0.001 / 8 = 0.000125
        //   628.3 between:     smooth = (1000 / 628.3185 − 1) / (4 − 1) = 0.1971831,
        //                      (1 − smooth) · 0.01 / 8 + smooth · 0.01 = 0.002975353
        let scaling =
            RopeScaling::Llama3 { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 1000.0 };
        close(&rope_inv_freq(8, 10_000.0, scaling), &[1.0, 0.1, 0.002_975_352_506_846_947, 0.000_125]);
    }

    #[test]
    fn llama3_scaling_of_llama_3_2_1b() {
        // Llama-3.2-1B's config: head_dim 64, rope_theta 500000, factor 32, low 1, high 4,
        // original_max_position_embeddings 8192 (bands at wavelengths 2048 and 8192).
        let scaling =
            RopeScaling::Llama3 { factor: 32.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192.0 };
        let inv_freq = rope_inv_freq(64, 500_000.0, scaling);
        let plain = rope_inv_freq(64, 500_000.0, RopeScaling::None);
        // i ≤ 14: wavelength under 2048, kept (i = 10: 500000^(−20/64) = 0.016560440, λ = 379.4)
        assert_eq!(inv_freq[..15], plain[..15]);
        close(&inv_freq[10..11], &[0.016_560_440_080_994_446]);
        // i = 15: λ = 2948.3, blended: smooth = (8192 / 2948.3026 − 1) / 3 = 0.5928379,
        // 0.0021311195 · ((1 − smooth) / 32 + smooth) = 0.0012905479
        close(&inv_freq[15..16], &[0.001_290_547_928_209_264]);
        // i = 16: λ = 4442.9, blended: 0.0014142136 · ((1 − 0.2812686) / 32 + 0.2812686)
        close(&inv_freq[16..17], &[0.000_429_556_796_559_368_15]);
        // i = 17: λ = 6695.1, blended: 0.00093847387 · ((1 − 0.0745266) / 32 + 0.0745266)
        close(&inv_freq[17..18], &[9.708_287_802_627_67e-5]);
        // i ≥ 18: wavelength past 8192 (i = 18: 10089), divided by 32
        for i in 18..32 {
            assert!((inv_freq[i] as f64 - plain[i] as f64 / 32.0).abs() <= 1e-7 * inv_freq[i] as f64, "i = {i}");
        }
        close(&inv_freq[31..], &[3.013_858_152_139_170_8e-6 / 32.0]);
    }
}
