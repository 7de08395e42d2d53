// GELU, tanh form (as GPT-2):  gelu(x) = ½x(1 + tanh(√(2/π)(x + 0.044715x³))).
//   forward:  out  = gelu(inp)
//   backward: dinp = gelu'(inp) · dout
// Computed through the identity ½(1 + tanh a) = sigmoid(2a) = 1 / (1 + exp(−2a)):
// for negative x, 1 + tanh a cancels to 0 in f32 while the sigmoid keeps the tiny
// true value, and no tanh (which some drivers build from exp and overflow) is needed.
// a is clamped to ±30 so exp never overflows; sigmoid is 0 or 1 in f32 well before that.

struct Params { n: u32, _p0: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> inp: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read> dout: array<f32>;
@group(0) @binding(4) var<storage, read_write> dinp: array<f32>;

const SQRT_2_OVER_PI: f32 = 0.7978845608028654;
const GELU_COEFF: f32 = 0.044715;

// sigmoid(2a) = ½(1 + tanh a), a = √(2/π)(x + 0.044715x³)
fn half_one_plus_tanh(x: f32) -> f32 {
  let a = clamp(SQRT_2_OVER_PI * (x + GELU_COEFF * x * x * x), -30.0, 30.0);
  return 1.0 / (1.0 + exp(-2.0 * a));
}

@compute @workgroup_size(64)
fn gelu_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= p.n) { return; }
  let x = inp[i];
  out[i] = x * half_one_plus_tanh(x);
}

// gelu'(x) = ½(1 + tanh a) + ½x · sech²a · a',  with ½(1 + tanh a) = s, sech²a = 4s(1 − s)
@compute @workgroup_size(64)
fn gelu_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= p.n) { return; }
  let x = inp[i];
  let s = half_one_plus_tanh(x);
  let da = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_COEFF * x * x);
  dinp[i] = (s + 2.0 * x * s * (1.0 - s) * da) * dout[i];
}
