// Batched matrix multiply: out[z] = A[z] · B[z]  (+ bias[n])  (+ out[z] when accumulating).
//
// A (M×K) and B (K×N) are read through strides, so one kernel computes
//   A·B   — a linear layer's input gradient  dX = dY · W
//   A·Bᵀ  — a linear layer's forward         Y  = X · Wᵀ   (W stored out×in, as PyTorch)
//   Aᵀ·B  — a linear layer's weight gradient dW = dYᵀ · X
// Element A(m, k) = a[a_offset + z*a_batch + m*a_row + k*a_col]; B(k, n) likewise.
// out is row-major: out[out_offset + z*out_batch + m*N + n].
//
// Tiling: a 16×16 workgroup computes a 64×64 block of out. Each invocation keeps a 4×4
// sub-block in registers (rows ly + 16i, columns lx + 16j, so neighbouring invocations
// store neighbouring columns). K advances 16 at a time through two 64×16 tiles held in
// workgroup memory (2 × 4 KiB). Edges are zero-filled, so any M, N, K works.

struct Params {
  M: u32, N: u32, K: u32, flags: u32,        // flags: 1 = add bias, 2 = accumulate into out
  a_offset: u32, a_batch: u32, a_row: u32, a_col: u32,
  b_offset: u32, b_batch: u32, b_row: u32, b_col: u32,
  out_offset: u32, out_batch: u32, bias_offset: u32, _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

const TILE: u32 = 64u;    // output rows and columns per workgroup
const TILE_K: u32 = 16u;  // depth of one step through K

var<workgroup> tile_a: array<f32, 1024>;  // [TILE_K][TILE]: tile_a[k * TILE + m]
var<workgroup> tile_b: array<f32, 1024>;  // [TILE_K][TILE]: tile_b[k * TILE + n]

// Out-of-range elements read as 0. The read itself is clamped into range and the value
// selected away, rather than branched around: no divergent control flow in the hot loop.
fn load_a(z: u32, m: u32, k: u32) -> f32 {
  let inside = m < p.M && k < p.K;
  let v = a[p.a_offset + z * p.a_batch + min(m, p.M - 1u) * p.a_row + min(k, p.K - 1u) * p.a_col];
  return select(0.0, v, inside);
}

fn load_b(z: u32, k: u32, n: u32) -> f32 {
  let inside = k < p.K && n < p.N;
  let v = b[p.b_offset + z * p.b_batch + min(k, p.K - 1u) * p.b_row + min(n, p.N - 1u) * p.b_col];
  return select(0.0, v, inside);
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

@compute @workgroup_size(16, 16)
fn matmul(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let z = wid.z;
  let m0 = wid.y * TILE;
  let n0 = wid.x * TILE;
  let t = lid.y * 16u + lid.x;
  var acc: array<f32, 16>;
  for (var k0 = 0u; k0 < p.K; k0 += TILE_K) {
    // 256 invocations load the two 64×16 tiles, 4 elements each, walking the
    // contiguous direction of memory so that neighbours read neighbours.
    for (var i = 0u; i < 4u; i++) {
      let e = t + i * 256u;
      var m: u32;
      var ka: u32;
      if (p.a_col == 1u) { m = e / TILE_K; ka = e % TILE_K; } else { m = e % TILE; ka = e / TILE; }
      tile_a[ka * TILE + m] = load_a(z, m0 + m, k0 + ka);
      var n: u32;
      var kb: u32;
      if (p.b_col == 1u) { n = e % TILE; kb = e / TILE; } else { n = e / TILE_K; kb = e % TILE_K; }
      tile_b[kb * TILE + n] = load_b(z, k0 + kb, n0 + n);
    }
    workgroupBarrier();
    for (var k = 0u; k < TILE_K; k++) {
      var av: array<f32, 4>;
      var bv: array<f32, 4>;
      for (var i = 0u; i < 4u; i++) {
        av[i] = tile_a[k * TILE + lid.y + 16u * i];
        bv[i] = tile_b[k * TILE + lid.x + 16u * i];
      }
      for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
          acc[i * 4u + j] = fma(av[i], bv[j], acc[i * 4u + j]);
        }
      }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    for (var j = 0u; j < 4u; j++) {
      store(z, m0 + lid.y + 16u * i, n0 + lid.x + 16u * j, acc[i * 4u + j]);
    }
  }
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
