// Reading weights that may be stored in 16 bits (crate/cpu/half16.rs has the layout and
// the twins): element j of a tensor is word j of an f32 array (code 0), or half j % 2 of
// word j / 2 of packed f16 (code 1) or bf16 (code 2) values, widened to f32 exactly.
// The f16 widening is done with integer operations rather than unpack2x16float, which
// may flush subnormal halves to zero: weights near zero must come back as they went in.

// The word holding element j.
fn word16(j: u32, code: u32) -> u32 {
  return select(j, j >> 1u, code != 0u);
}

// Element j's value from its word.
fn widen16(word: u32, j: u32, code: u32) -> f32 {
  if (code == 0u) { return bitcast<f32>(word); }
  let h = select(word & 0xffffu, word >> 16u, (j & 1u) == 1u);
  if (code == 2u) { return bitcast<f32>(h << 16u); }
  let sign = (h & 0x8000u) << 16u;
  let e = (h >> 10u) & 0x1fu;
  let m = h & 0x3ffu;
  if (e == 0u) {
    // zero or subnormal: m · 2⁻²⁴, a normal f32 (exact)
    return bitcast<f32>(sign | bitcast<u32>(f32(m) * 5.9604644775390625e-8));
  }
  // normal (a model's weights are finite: infinities and NaN are refused on reading)
  return bitcast<f32>(sign | ((e + 112u) << 23u) | (m << 13u));
}
