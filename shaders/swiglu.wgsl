// SwiGLU (Llama's MLP activation): out = silu(gate) ⊙ up, silu(g) = g · sigmoid(g).
//   forward:  out (N, H) from inp (N, 2H), each row of inp [gate (H) | up (H)]
//             (the output of one fused gate_up projection)
//   backward: dinp (N, 2H) = [dgate | dup], overwritten, from dout (N, H):
//             dgate = dout ⊙ up ⊙ silu'(gate),  silu'(g) = s + g · s(1 − s), s = sigmoid(g)
//             dup   = dout ⊙ silu(gate)
// sigmoid is taken as 1 / (1 + e) or e / (1 + e) with e = exp(−|g|): exp never overflows,
// and neither s nor 1 − s is computed by a subtraction that cancels.

struct Params { N: u32, H: u32, _p0: u32, _p1: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> inp: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read> dout: array<f32>;
@group(0) @binding(4) var<storage, read_write> dinp: array<f32>;

// (sigmoid(g), 1 − sigmoid(g))
fn sigmoid_halves(g: f32) -> vec2<f32> {
  let e = exp(-abs(g));
  let big = 1.0 / (1.0 + e);
  let small = e / (1.0 + e);
  return select(vec2(small, big), vec2(big, small), g >= 0.0);
}

// One invocation per output element (n, j).
@compute @workgroup_size(64)
fn swiglu_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= p.N * p.H) { return; }
  let row = i / p.H;
  let j = i % p.H;
  let gate = inp[row * 2u * p.H + j];
  let up = inp[row * 2u * p.H + p.H + j];
  out[i] = gate * sigmoid_halves(gate).x * up;
}

@compute @workgroup_size(64)
fn swiglu_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= p.N * p.H) { return; }
  let row = i / p.H;
  let j = i % p.H;
  let gate = inp[row * 2u * p.H + j];
  let up = inp[row * 2u * p.H + p.H + j];
  let s = sigmoid_halves(gate);
  let g = dout[i];
  dinp[row * 2u * p.H + j] = g * up * (s.x + gate * s.x * s.y);
  dinp[row * 2u * p.H + p.H + j] = g * gate * s.x;
}
