// AdamW (decoupled weight decay, bias-corrected moments), in PyTorch's order of operations:
//   g = grad · clip_scale
//   param ·= 1 − lr · weight_decay
//   m = m + (1 − β1)(g − m);   v = β2 v + (1 − β2) g²
//   param −= (lr / (1 − β1^t)) · m / (√v / √(1 − β2^t) + eps)
// over elements offset .. offset + n of the flat parameter, gradient and moment buffers.
// clip_scale is read from the GPU (grad_norm's output), so clipping needs no readback.

struct Params {
  n: u32, offset: u32, lr: f32, beta1: f32,
  beta2: f32, eps: f32, weight_decay: f32, bias_correction1: f32,
  bias_correction2_sqrt: f32, _p0: u32, _p1: u32, _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> params: array<f32>;
@group(0) @binding(2) var<storage, read> grads: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;
@group(0) @binding(5) var<storage, read> norm: array<f32>;  // [grad norm, clip scale]

@compute @workgroup_size(64)
fn adamw(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= p.n) { return; }
  let j = p.offset + i;
  let g = grads[j] * norm[1];
  var w = params[j] * (1.0 - p.lr * p.weight_decay);
  let m_new = m[j] + (1.0 - p.beta1) * (g - m[j]);
  let v_new = p.beta2 * v[j] + (1.0 - p.beta2) * g * g;
  let denom = sqrt(v_new) / p.bias_correction2_sqrt + p.eps;
  w -= (p.lr / p.bias_correction1) * m_new / denom;
  m[j] = m_new;
  v[j] = v_new;
  params[j] = w;
}
