//! Frozen matrices stored in 16 bits: two values to a 32-bit word, element j in word
//! j / 2, in its low half when j is even (a little-endian u16 array read as u32s). The
//! kernels that read weights (matmul's B, the embedding tables, axpy's source) widen each
//! value to f32 as they load it: `unpack2x16float` for f16, a 16-bit shift for bf16, both
//! core WGSL, so no device feature (`shader-f16`) is needed and the arithmetic stays f32.
//! A model is stored this way only when every matrix value fits the format exactly (a Hub
//! model that shipped in f16 or bf16), so the results are bit for bit those of f32
//! storage. These are the kernels' twins.

/// The 16-bit format a model's matrices are kept in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HalfFormat {
    /// IEEE half precision (5 exponent bits, 10 mantissa bits).
    F16,
    /// bfloat16: the upper half of an f32 (8 exponent bits, 7 mantissa bits).
    Bf16,
}

impl HalfFormat {
    /// The format every value fits exactly (bf16 first, how most Hub models ship), or None
    /// when some value needs f32.
    pub fn exact_for<'a>(mut tensors: impl Iterator<Item = &'a [f32]> + Clone) -> Option<HalfFormat> {
        if tensors.clone().all(|t| t.iter().all(|x| x.to_bits() & 0xffff == 0)) {
            return Some(HalfFormat::Bf16);
        }
        tensors
            .all(|t| t.iter().all(|&x| half::f16::from_f32(x).to_f32().to_bits() == x.to_bits()))
            .then_some(HalfFormat::F16)
    }

    /// "f16" or "bf16".
    pub fn name(self) -> &'static str {
        match self {
            HalfFormat::F16 => "f16",
            HalfFormat::Bf16 => "bf16",
        }
    }

    /// The kernels' code for it in their Params (0 is f32).
    pub fn code(format: Option<HalfFormat>) -> u32 {
        match format {
            None => 0,
            Some(HalfFormat::F16) => 1,
            Some(HalfFormat::Bf16) => 2,
        }
    }

    fn bits(self, x: f32) -> u16 {
        match self {
            HalfFormat::F16 => half::f16::from_f32(x).to_bits(),
            HalfFormat::Bf16 => (x.to_bits() >> 16) as u16,
        }
    }

    fn widen_bits(self, h: u16) -> f32 {
        match self {
            HalfFormat::F16 => half::f16::from_bits(h).to_f32(),
            HalfFormat::Bf16 => f32::from_bits((h as u32) << 16),
        }
    }
}

/// `values` two to a word (the last word's high half 0 for an odd count).
pub fn pack(values: &[f32], format: HalfFormat) -> Vec<u32> {
    values
        .chunks(2)
        .map(|pair| format.bits(pair[0]) as u32 | (pair.get(1).map_or(0, |&x| format.bits(x)) as u32) << 16)
        .collect()
}

/// Writes `values` as elements offset.. of packed `words`.
pub fn pack_into(words: &mut [u32], offset: usize, values: &[f32], format: HalfFormat) {
    for (i, &x) in values.iter().enumerate() {
        let j = offset + i;
        let shift = 16 * (j % 2);
        words[j / 2] = words[j / 2] & !(0xffff << shift) | (format.bits(x) as u32) << shift;
    }
}

/// Elements offset..offset + len of packed `words` (held as f32 bit patterns, as the CPU
/// backend keeps u32 data), widened to f32.
pub fn widen(words: &[f32], offset: usize, len: usize, format: HalfFormat) -> Vec<f32> {
    (offset..offset + len)
        .map(|j| {
            let w = words[j / 2].to_bits();
            format.widen_bits(if j % 2 == 0 { w as u16 } else { (w >> 16) as u16 })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_is_the_one_every_value_fits_and_packing_round_trips() {
        let bf = [1.0f32, -0.5, f32::from_bits(0x3f81_0000), f32::from_bits(0x1e00_0000)];
        let f16 = [1.0f32, 1365.0 / 4096.0, -65504.0];
        let f32s = [1.0f32, 0.1];
        assert_eq!(HalfFormat::exact_for([&bf[..]].into_iter()), Some(HalfFormat::Bf16));
        assert_eq!(HalfFormat::exact_for([&f16[..], &[2.0][..]].into_iter()), Some(HalfFormat::F16));
        assert_eq!(
            HalfFormat::exact_for([&bf[..], &f16[..]].into_iter()),
            None,
            "7e-21 underflows f16, 1365/4096 needs more than bf16"
        );
        assert_eq!(HalfFormat::exact_for([&f32s[..]].into_iter()), None);
        for (values, format) in [(&bf[..], HalfFormat::Bf16), (&f16[..], HalfFormat::F16)] {
            let words: Vec<f32> = pack(values, format).into_iter().map(f32::from_bits).collect();
            assert_eq!(words.len(), values.len().div_ceil(2));
            assert_eq!(widen(&words, 0, values.len(), format), values);
            assert_eq!(widen(&words, 1, 2, format), &values[1..3]);
            let mut shifted = vec![0; 3];
            pack_into(&mut shifted, 1, values, format);
            let shifted: Vec<f32> = shifted.into_iter().map(f32::from_bits).collect();
            assert_eq!(widen(&shifted, 1, values.len(), format), values);
        }
    }
}
