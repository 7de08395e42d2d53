// Batched matrix multiply: out[z] = A[z] · B[z]  (+ bias[n])  (+ out[z] when accumulating).
//
// A (M×K) and B (K×N) are read through strides, so one kernel computes
//   A·B   — a linear layer's input gradient  dX = dY · W
//   A·Bᵀ  — a linear layer's forward         Y  = X · Wᵀ   (W stored out×in, as PyTorch)
//   Aᵀ·B  — a linear layer's weight gradient dW = dYᵀ · X
// Element A(m, k) = a[a_offset + z*a_batch + m*a_row + k*a_col]; B(k, n) likewise.
// out is row-major: out[out_offset + z*out_batch + m*N + n].
// B may be a frozen weight stored in 16 bits (flags bits 2–3: half16.wgsl's code).
//
// Tiling: a 16×16 workgroup computes a 64×64 block of out; invocation (x, y) owns the
// 4×4 sub-block at rows 4y.., columns 4x.., held in four vec4 accumulators (named
// variables, not an array: an array indexed in a loop can land in slow local memory, as
// it did on NVIDIA, where an earlier array-based version of this kernel ran 7× slower than
// the naive one). K advances 16 at a time through two 16×64 tiles in workgroup memory,
// stored as vec4s: one vec4 read from each gives the 4 rows of A and 4 columns of B that
// an invocation multiplies, 16 FMAs for two loads. Edges are zero-filled, so any M, N, K works.

struct Params {
  M: u32, N: u32, K: u32, flags: u32,        // flags: 1 = add bias, 2 = accumulate into out, 4·code = B's format
  a_offset: u32, a_batch: u32, a_row: u32, a_col: u32,
  b_offset: u32, b_batch: u32, b_row: u32, b_col: u32,
  out_offset: u32, out_batch: u32, bias_offset: u32, _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<u32>;  // f32 bits, or 16-bit pairs
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

const TILE: u32 = 64u;    // output rows and columns per workgroup
const TILE_K: u32 = 16u;  // depth of one step through K

// [TILE_K][TILE / 4] vec4s: tile_a[k * 16 + q] = A(4q .. 4q+3, k), tile_b[k * 16 + q] = B(k, 4q .. 4q+3)
var<workgroup> tile_a: array<vec4<f32>, 256>;
var<workgroup> tile_b: array<vec4<f32>, 256>;

// Out-of-range elements read as 0. The read itself is clamped into range and the value
// selected away, rather than branched around: no divergent control flow in the hot loop.
fn load_a(z: u32, m: u32, k: u32) -> f32 {
  let inside = m < p.M && k < p.K;
  let v = a[p.a_offset + z * p.a_batch + min(m, p.M - 1u) * p.a_row + min(k, p.K - 1u) * p.a_col];
  return select(0.0, v, inside);
}

fn load_b(z: u32, k: u32, n: u32) -> f32 {
  let inside = k < p.K && n < p.N;
  let j = p.b_offset + z * p.b_batch + min(k, p.K - 1u) * p.b_row + min(n, p.N - 1u) * p.b_col;
  let code = p.flags >> 2u;
  return select(0.0, widen16(b[word16(j, code)], j, code), inside);
}

fn store(z: u32, m: u32, n: u32, acc: f32) {
  if (m < p.M && n < p.N) {
    var v = acc;
    if ((p.flags & 1u) != 0u) {
      v += bias[p.bias_offset + n];
    }
    let i = p.out_offset + z * p.out_batch + m * p.N + n;
    if ((p.flags & 2u) != 0u) {
      v += out[i];
    }
    out[i] = v;
  }
}

fn store4(z: u32, m: u32, n: u32, acc: vec4<f32>) {
  store(z, m, n, acc.x);
  store(z, m, n + 1u, acc.y);
  store(z, m, n + 2u, acc.z);
  store(z, m, n + 3u, acc.w);
}

@compute @workgroup_size(16, 16)
fn matmul(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let z = wid.z;
  let m0 = wid.y * TILE;
  let n0 = wid.x * TILE;
  let t = lid.y * 16u + lid.x;
  // Each of the 256 invocations fills one vec4 of each tile (4 rows of A at one k, 4
  // columns of B at one k), walking memory's contiguous direction so that neighbours
  // read neighbours: along k where it is contiguous, else along the four rows/columns.
  var qa = t / 16u;
  var ka = t % 16u;
  if (p.a_col != 1u) { qa = t % 16u; ka = t / 16u; }
  var qb = t % 16u;
  var kb = t / 16u;
  if (p.b_col != 1u) { qb = t / 16u; kb = t % 16u; }
  var acc0 = vec4<f32>(0.0);
  var acc1 = vec4<f32>(0.0);
  var acc2 = vec4<f32>(0.0);
  var acc3 = vec4<f32>(0.0);
  for (var k0 = 0u; k0 < p.K; k0 += TILE_K) {
    let m = m0 + 4u * qa;
    tile_a[ka * 16u + qa] = vec4<f32>(load_a(z, m, k0 + ka), load_a(z, m + 1u, k0 + ka),
                                      load_a(z, m + 2u, k0 + ka), load_a(z, m + 3u, k0 + ka));
    let n = n0 + 4u * qb;
    tile_b[kb * 16u + qb] = vec4<f32>(load_b(z, k0 + kb, n), load_b(z, k0 + kb, n + 1u),
                                      load_b(z, k0 + kb, n + 2u), load_b(z, k0 + kb, n + 3u));
    workgroupBarrier();
    for (var k = 0u; k < TILE_K; k++) {
      let av = tile_a[k * 16u + lid.y];  // A(4y .. 4y+3, k)
      let bv = tile_b[k * 16u + lid.x];  // B(k, 4x .. 4x+3)
      acc0 = fma(vec4<f32>(av.x), bv, acc0);
      acc1 = fma(vec4<f32>(av.y), bv, acc1);
      acc2 = fma(vec4<f32>(av.z), bv, acc2);
      acc3 = fma(vec4<f32>(av.w), bv, acc3);
    }
    workgroupBarrier();
  }
  let m = m0 + 4u * lid.y;
  let n = n0 + 4u * lid.x;
  store4(z, m, n, acc0);
  store4(z, m + 1u, n, acc1);
  store4(z, m + 2u, n, acc2);
  store4(z, m + 3u, n, acc3);
}

// One invocation per output, straight from global memory: the baseline the benchmark
// compares the tiled kernel against.
@compute @workgroup_size(16, 16)
fn matmul_naive(@builtin(global_invocation_id) gid: vec3<u32>) {
  let n = gid.x;
  let m = gid.y;
  let z = gid.z;
  if (m >= p.M || n >= p.N) {
    return;
  }
  var acc = 0.0;
  for (var k = 0u; k < p.K; k++) {
    acc = fma(load_a(z, m, k), load_b(z, k, n), acc);
  }
  store(z, m, n, acc);
}
