//! The tensor encodings Kiln writes into GGUF: f32, f16 and Q8_0, each with its decoder
//! (the reader's, and the tests' reference).
//!
//! Q8_0 is ggml's 8-bit block format: 32 values a block, stored as one f16 scale d and 32
//! signed bytes q, the value read back as d·q. d = max|x| / 127 over the block, q =
//! round(x / d) (halves away from zero), as ggml's reference quantizer and the `gguf`
//! package's compute it, so the bytes are theirs exactly. Error: at most d/2 a value,
//! plus what rounding d to f16 moves (|q| ≤ 127 times d's rounding).

use half::f16;

/// ggml's type ids (`ggml_type`) for the encodings Kiln writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    F32,
    F16,
    Q8_0,
}

/// Values in one Q8_0 block.
pub const Q8_0_BLOCK: usize = 32;
/// Bytes of one Q8_0 block: the f16 scale, then 32 i8.
const Q8_0_BYTES: usize = 2 + Q8_0_BLOCK;

impl Encoding {
    pub fn ggml_type(self) -> u32 {
        match self {
            Encoding::F32 => 0,
            Encoding::F16 => 1,
            Encoding::Q8_0 => 8,
        }
    }

    pub fn from_ggml_type(t: u32) -> Option<Encoding> {
        match t {
            0 => Some(Encoding::F32),
            1 => Some(Encoding::F16),
            8 => Some(Encoding::Q8_0),
            _ => None,
        }
    }

    /// Bytes of a row of `n` values (None: Q8_0 of a row that is not whole blocks).
    pub fn row_bytes(self, n: usize) -> Option<usize> {
        match self {
            Encoding::F32 => n.checked_mul(4),
            Encoding::F16 => n.checked_mul(2),
            Encoding::Q8_0 => (n % Q8_0_BLOCK == 0).then_some(n / Q8_0_BLOCK * Q8_0_BYTES),
        }
    }

    /// `values` (rows of `row` values each) encoded.
    pub fn encode(self, values: &[f32]) -> Vec<u8> {
        match self {
            Encoding::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            Encoding::F16 => values.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect(),
            Encoding::Q8_0 => values.chunks(Q8_0_BLOCK).flat_map(q8_0_block).collect(),
        }
    }

    /// Bytes written by [`Encoding::encode`] back to f32.
    pub fn decode(self, bytes: &[u8]) -> Vec<f32> {
        match self {
            Encoding::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Encoding::F16 => bytes.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Encoding::Q8_0 => bytes
                .chunks_exact(Q8_0_BYTES)
                .flat_map(|b| {
                    let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
                    b[2..].iter().map(move |&q| d * q as i8 as f32)
                })
                .collect(),
        }
    }
}

/// One block of 32 values as Q8_0: the scale (f16) and the 32 rounded quotients.
fn q8_0_block(x: &[f32]) -> Vec<u8> {
    debug_assert_eq!(x.len(), Q8_0_BLOCK);
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut out = Vec::with_capacity(Q8_0_BYTES);
    out.extend(f16::from_f32(d).to_le_bytes());
    // f32::round rounds halves away from zero, as C's roundf
    out.extend(x.iter().map(|&v| (v * id).round() as i8 as u8));
    out
}

/// The most a Q8_0 value read back differs from `x`'s block's values: half a step, plus
/// the scale's f16 rounding times the largest quotient, plus a little f32 slack.
pub fn q8_0_bound(block: &[f32]) -> f32 {
    let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let d16 = f16::from_f32(d).to_f32();
    d16 / 2.0 + 127.0 * (d - d16).abs() + amax * 1e-6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_reads_back_within_its_bound_and_keeps_zero_blocks() {
        let x: Vec<f32> = (0..96).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013).collect();
        let mut with_zeros = x.clone();
        with_zeros[32..64].fill(0.0);
        let bytes = Encoding::Q8_0.encode(&with_zeros);
        assert_eq!(bytes.len(), Encoding::Q8_0.row_bytes(96).unwrap());
        let back = Encoding::Q8_0.decode(&bytes);
        for (block, got) in with_zeros.chunks(32).zip(back.chunks(32)) {
            let bound = q8_0_bound(block);
            for (a, b) in block.iter().zip(got) {
                assert!((a - b).abs() <= bound, "{a} read back as {b}, bound {bound}");
            }
        }
        assert!(back[32..64].iter().all(|&v| v == 0.0));
        // the largest value of a block is 127 steps exactly
        let top = with_zeros[..32].iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert_eq!(bytes[2..34].iter().map(|&q| (q as i8).unsigned_abs()).max(), Some(127));
        assert!(top > 0.0);
        assert_eq!(Encoding::Q8_0.row_bytes(33), None);
    }

    #[test]
    fn f16_and_f32_read_back() {
        let x = [0.1f32, -2.5, 65504.0, 1e-8];
        assert_eq!(Encoding::F32.decode(&Encoding::F32.encode(&x)), x);
        let h = Encoding::F16.decode(&Encoding::F16.encode(&x));
        assert_eq!(h[1], -2.5);
        assert!((h[0] - 0.1).abs() < 1e-4);
        assert_eq!(h[2], 65504.0);
    }
}
