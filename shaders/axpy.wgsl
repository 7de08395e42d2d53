// A scaled copy between two strided row sets (BLAS's axpy, row by row):
//   out[out_offset + r*out_stride + w] (+)= alpha * src[src_offset + r*src_stride + w]
// for r < R, w < W (src_stride 0: one row read for every output row). LoRA uses it to add its scaled low-rank product into one projection's
// columns of a fused output (q|k|v, gate|up) and to read that slice of the gradient back.

struct Params {
  R: u32, W: u32, src_offset: u32, src_stride: u32,
  out_offset: u32, out_stride: u32, alpha: f32, flags: u32,  // 1 = accumulate, 2·code = src's format
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;  // f32 bits, or 16-bit pairs (a frozen weight)
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn axpy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= p.R * p.W) { return; }
  let r = i / p.W;
  let w = i % p.W;
  let o = p.out_offset + r * p.out_stride + w;
  let j = p.src_offset + r * p.src_stride + w;
  let code = p.flags >> 1u;
  var y = p.alpha * widen16(src[word16(j, code)], j, code);
  if ((p.flags & 1u) != 0u) { y += out[o]; }
  out[o] = y;
}
