// Column sums of a row-major (R, W) matrix, deterministically (no float atomics):
//   out[out_offset + chunk*W + w] (+)= Σ_{r in chunk} src[src_offset + r*W + w]
// with chunks of `chunk_rows` rows. One chunk covering all rows is a finished sum; more
// chunks give partial sums that a second dispatch adds up in a fixed order.
// Used for bias gradients (Σ over B·T rows), position-embedding gradients (Σ over B) and
// LayerNorm's weight and bias gradients.

struct Params {
  R: u32, W: u32, src_offset: u32, out_offset: u32,
  chunk_rows: u32, accumulate: u32, _p0: u32, _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn sum_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 64u;
  let chunks = (p.R + p.chunk_rows - 1u) / p.chunk_rows;
  if (i >= chunks * p.W) { return; }
  let chunk = i / p.W;
  let w = i % p.W;
  var acc = 0.0;
  let end = min(p.R, (chunk + 1u) * p.chunk_rows);
  for (var r = chunk * p.chunk_rows; r < end; r++) {
    acc += src[p.src_offset + r * p.W + w];
  }
  let o = p.out_offset + i;
  if (p.accumulate != 0u) { acc += out[o]; }
  out[o] = acc;
}
