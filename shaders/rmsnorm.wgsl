// RMSNorm over the last dimension (Llama): out = x · rstd · weight, rstd = 1 / √(mean(x²) + eps).
// No mean subtraction, no bias.
//
// inp, out, dout, dinp (N, C); weight (C) at an offset in the parameter buffer;
// rstd (N) saved by the forward pass for the backward pass. One workgroup per row.
// Backward is split so nothing needs float atomics:
//   rmsnorm_backward         dinp += rstd · (dxhat − xhat · mean(dxhat ⊙ xhat)),
//                            xhat = x · rstd, dxhat = dout ⊙ weight, per row
//   rmsnorm_backward_params  per chunk of rows: partial Σ dout ⊙ xhat (→ dweight);
//                            sum_rows then adds the chunks up in order.

struct Params {
  N: u32, C: u32, weight_offset: u32, eps: f32,
  chunk_rows: u32, _p0: u32, _p1: u32, _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> inp: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> rstd: array<f32>;
@group(0) @binding(5) var<storage, read> dout: array<f32>;
@group(0) @binding(6) var<storage, read_write> dinp: array<f32>;
@group(0) @binding(7) var<storage, read_write> partial: array<f32>;  // (chunks, C)

const WG: u32 = 128u;  // workgroup size of the row kernels; reduce_sum (reduce.wgsl) reduces over it

@compute @workgroup_size(WG)
fn rmsnorm_forward(
  @builtin(local_invocation_index) lid: u32,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.N) { return; }
  let base = row * p.C;
  var s = 0.0;
  for (var c = lid; c < p.C; c += WG) {
    let x = inp[base + c];
    s += x * x;
  }
  let r = 1.0 / sqrt(reduce_sum(s, lid) / f32(p.C) + p.eps);
  for (var c = lid; c < p.C; c += WG) {
    out[base + c] = inp[base + c] * r * weight[p.weight_offset + c];
  }
  if (lid == 0u) {
    rstd[row] = r;
  }
}

@compute @workgroup_size(WG)
fn rmsnorm_backward(
  @builtin(local_invocation_index) lid: u32,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.N) { return; }
  let base = row * p.C;
  let r = rstd[row];
  var sum_dxhat_xhat = 0.0;
  for (var c = lid; c < p.C; c += WG) {
    sum_dxhat_xhat += dout[base + c] * weight[p.weight_offset + c] * inp[base + c] * r;
  }
  let mean_dxhat_xhat = reduce_sum(sum_dxhat_xhat, lid) / f32(p.C);
  for (var c = lid; c < p.C; c += WG) {
    let xhat = inp[base + c] * r;
    let dxhat = dout[base + c] * weight[p.weight_offset + c];
    dinp[base + c] += (dxhat - xhat * mean_dxhat_xhat) * r;
  }
}

// One invocation per (chunk, c): partial[chunk][c] = Σ dout·xhat over the chunk's rows.
@compute @workgroup_size(64)
fn rmsnorm_backward_params(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 64u;
  let chunks = (p.N + p.chunk_rows - 1u) / p.chunk_rows;
  if (i >= chunks * p.C) { return; }
  let chunk = i / p.C;
  let c = i % p.C;
  var dw = 0.0;
  let end = min(p.N, (chunk + 1u) * p.chunk_rows);
  for (var row = chunk * p.chunk_rows; row < end; row++) {
    dw += dout[row * p.C + c] * inp[row * p.C + c] * rstd[row];
  }
  partial[i] = dw;
}
