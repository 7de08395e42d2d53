// AdamW (decoupled weight decay, bias-corrected moments), in PyTorch's order of operations:
//   g = grad · clip_scale
//   param ·= 1 − lr · weight_decay          (matrices only: decay bit set)
//   m = m + (1 − β1)(g − m);   v = β2 v + (1 − β2) g²
//   param −= (lr / (1 − β1^t)) · m / (√v / √(1 − β2^t) + eps)
// over every element of the flat parameter, gradient and moment buffers, in one dispatch.
// The values that change every step (clip scale, lr, bias corrections) are read from the
// `step` buffer, not the uniform: the dispatch's bind group stays the same from step to
// step. The clip scale is written there by grad_norm on the GPU, so clipping needs no
// readback; the rest by the step's recording.

struct Params { n: u32, beta1: f32, beta2: f32, eps: f32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> params: array<f32>;
@group(0) @binding(2) var<storage, read> grads: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;
// [grad norm, clip scale, lr, weight decay, 1 − β1^t, √(1 − β2^t)]
@group(0) @binding(5) var<storage, read> step: array<f32>;
// bit j % 32 of word j / 32: whether element j decays
@group(0) @binding(6) var<storage, read> decay: array<u32>;

@compute @workgroup_size(64)
fn adamw(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let j = gid.x + gid.y * nwg.x * 64u;
  if (j >= p.n) { return; }
  let lr = step[2];
  let weight_decay = select(0.0, step[3], ((decay[j / 32u] >> (j % 32u)) & 1u) == 1u);
  let g = grads[j] * step[1];
  var w = params[j] * (1.0 - lr * weight_decay);
  let m_new = m[j] + (1.0 - p.beta1) * (g - m[j]);
  let v_new = p.beta2 * v[j] + (1.0 - p.beta2) * g * g;
  let denom = sqrt(v_new) / step[5] + p.eps;
  w -= (lr / step[4]) * m_new / denom;
  m[j] = m_new;
  v[j] = v_new;
  params[j] = w;
}
