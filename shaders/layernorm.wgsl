// LayerNorm over the last dimension: out = (x − mean) · rstd · weight + bias.
//
// inp, out, dout, dinp (N, C); weight, bias (C) at offsets in the parameter buffer;
// mean, rstd (N) saved by the forward pass for the backward pass.
// Forward is two-pass (mean, then the variance of x − mean), which stays accurate when
// |mean| ≫ std. One workgroup per row.
// Backward is split so nothing needs float atomics:
//   layernorm_backward         dinp += rstd · (dnorm − mean(dnorm) − xhat · mean(dnorm ⊙ xhat)),
//                              dnorm = dout ⊙ weight, per row
//   layernorm_backward_params  per chunk of rows: partial Σ dout ⊙ xhat (→ dweight) and
//                              Σ dout (→ dbias); sum_rows then adds the chunks up in order.

struct Params {
  N: u32, C: u32, weight_offset: u32, bias_offset: u32,
  eps: f32, chunk_rows: u32, _p0: u32, _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> inp: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read_write> mean: array<f32>;
@group(0) @binding(6) var<storage, read_write> rstd: array<f32>;
@group(0) @binding(7) var<storage, read> dout: array<f32>;
@group(0) @binding(8) var<storage, read_write> dinp: array<f32>;
@group(0) @binding(9) var<storage, read_write> partial: array<f32>;  // (2, chunks, C)

const WG: u32 = 128u;  // workgroup size of the row kernels; reduce_* (reduce.wgsl) reduce over it

@compute @workgroup_size(WG)
fn layernorm_forward(
  @builtin(local_invocation_index) lid: u32,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.N) { return; }
  let base = row * p.C;
  var s = 0.0;
  for (var c = lid; c < p.C; c += WG) { s += inp[base + c]; }
  let m = reduce_sum(s, lid) / f32(p.C);
  var v = 0.0;
  for (var c = lid; c < p.C; c += WG) {
    let d = inp[base + c] - m;
    v += d * d;
  }
  let r = 1.0 / sqrt(reduce_sum(v, lid) / f32(p.C) + p.eps);
  for (var c = lid; c < p.C; c += WG) {
    out[base + c] = (inp[base + c] - m) * r * weight[p.weight_offset + c] + bias[p.bias_offset + c];
  }
  if (lid == 0u) {
    mean[row] = m;
    rstd[row] = r;
  }
}

@compute @workgroup_size(WG)
fn layernorm_backward(
  @builtin(local_invocation_index) lid: u32,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.N) { return; }
  let base = row * p.C;
  let m = mean[row];
  let r = rstd[row];
  var sum_dnorm = 0.0;
  var sum_dnorm_xhat = 0.0;
  for (var c = lid; c < p.C; c += WG) {
    let xhat = (inp[base + c] - m) * r;
    let dnorm = dout[base + c] * weight[p.weight_offset + c];
    sum_dnorm += dnorm;
    sum_dnorm_xhat += dnorm * xhat;
  }
  let mean_dnorm = reduce_sum(sum_dnorm, lid) / f32(p.C);
  let mean_dnorm_xhat = reduce_sum(sum_dnorm_xhat, lid) / f32(p.C);
  for (var c = lid; c < p.C; c += WG) {
    let xhat = (inp[base + c] - m) * r;
    let dnorm = dout[base + c] * weight[p.weight_offset + c];
    dinp[base + c] += (dnorm - mean_dnorm - xhat * mean_dnorm_xhat) * r;
  }
}

// One invocation per (chunk, c): partial[0][chunk][c] = Σ dout·xhat, partial[1][chunk][c] = Σ dout.
@compute @workgroup_size(64)
fn layernorm_backward_params(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 64u;
  let chunks = (p.N + p.chunk_rows - 1u) / p.chunk_rows;
  if (i >= chunks * p.C) { return; }
  let chunk = i / p.C;
  let c = i % p.C;
  var dw = 0.0;
  var db = 0.0;
  let end = min(p.N, (chunk + 1u) * p.chunk_rows);
  for (var row = chunk * p.chunk_rows; row < end; row++) {
    let d = dout[row * p.C + c];
    dw += d * (inp[row * p.C + c] - mean[row]) * rstd[row];
    db += d;
  }
  partial[i] = dw;
  partial[chunks * p.C + i] = db;
}
