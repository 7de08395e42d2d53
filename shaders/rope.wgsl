// Rotary position embeddings (RoPE), Hugging Face's Llama convention (rotate_half): in each
// head of HS channels, channel i pairs with channel i + HS/2, and the pair at position pos
// turns by the angle θ = pos · inv_freq[i] (i < HS/2):
//   forward:  x[i] ← x[i]·cos θ − x[i + HS/2]·sin θ,  x[i + HS/2] ← x[i + HS/2]·cos θ + x[i]·sin θ
//   backward: the same with −θ (a rotation's transpose is its inverse), on the gradient
// Both run in place on x (B, T, stride) from element x_offset: B sequences of T positions,
// position t at pos0 + t (pos0 > 0 for a KV-cache decode step), each position a row of
// `stride` floats whose first `heads` heads of HS are turned and the rest left as they are.
// For the fused qkv (B, T, 3C) that attention reads, heads = 2·NH: q's heads and k's lie
// together at the start of each row, v's after them stay.
// inv_freq (HS/2) is computed on the host (crate/cpu/rope.rs: plain or llama3-scaled).
//
// sin and cos are taken here, not from the builtins: WGSL promises their accuracy only on
// [−π, π] (and only to 2⁻¹¹), while θ reaches the context length. θ is reduced by π/2 in
// three parts (Cody–Waite: k·P1 and k·P2 are exact for k < 2¹²), then polynomials on
// [−π/4, π/4] (Cephes' sinf/cosf) give both to about an ulp, on every driver alike.
// One invocation per (row, head, i).

struct Params {
  B: u32, T: u32, stride: u32, heads: u32,
  HS: u32, pos0: u32, x_offset: u32, _p0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> inv_freq: array<f32>;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;

const TWO_OVER_PI: f32 = 0.6366197723675814;
const PIO2_1: f32 = 1.5703125;  // π/2 = PIO2_1 + PIO2_2 + PIO2_3, the first two with few bits
const PIO2_2: f32 = 4.838705062866211e-4;
const PIO2_3: f32 = -4.371138828673793e-8;

// (sin a, cos a)
fn sin_cos(a: f32) -> vec2<f32> {
  let k = round(a * TWO_OVER_PI);
  let r = ((a - k * PIO2_1) - k * PIO2_2) - k * PIO2_3;  // in [−π/4, π/4]
  let z = r * r;
  let s = r + r * z * (-1.6666654611e-1 + z * (8.3321608736e-3 + z * -1.9515295891e-4));
  let c = 1.0 - 0.5 * z + z * z * (4.166664568298827e-2 + z * (-1.388731625493765e-3 + z * 2.443315711809948e-5));
  // a = r + k·π/2: quadrant k mod 4 (two's complement keeps this right for k < 0)
  switch (i32(k) & 3) {
    case 0: { return vec2(s, c); }
    case 1: { return vec2(c, -s); }
    case 2: { return vec2(-s, -c); }
    default: { return vec2(-c, s); }
  }
}

// Turns one pair by `direction` · θ (1 forward, −1 backward).
fn rotate(gid: vec3<u32>, nwg: vec3<u32>, direction: f32) {
  let i = gid.x + gid.y * nwg.x * 64u;
  let half_hs = p.HS / 2u;
  if (i >= p.B * p.T * p.heads * half_hs) { return; }
  let j = i % half_hs;
  let head = (i / half_hs) % p.heads;
  let row = i / (half_hs * p.heads);  // b·T + t
  let pos = p.pos0 + row % p.T;
  let sc = sin_cos(f32(pos) * inv_freq[j]);
  let sin_t = direction * sc.x;
  let cos_t = sc.y;
  let lo = p.x_offset + row * p.stride + head * p.HS + j;
  let hi = lo + half_hs;
  let x1 = x[lo];
  let x2 = x[hi];
  x[lo] = x1 * cos_t - x2 * sin_t;
  x[hi] = x2 * cos_t + x1 * sin_t;
}

@compute @workgroup_size(64)
fn rope_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  rotate(gid, nwg, 1.0);
}

@compute @workgroup_size(64)
fn rope_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  rotate(gid, nwg, -1.0);
}
