// Token + position embedding.
//   forward:  out[b, t, :] = wte[tokens[b, t], :] + wpe[t, :]          (B, T, C)
//             (the wpe term only when p.positions = 1: rotary models have no table;
//             the tables in f32 or 16 bits, p.format being half16.wgsl's code)
//   backward: dwte[v, :] += Σ_{(b,t): tokens[b,t] = v} dout[b, t, :]
// The backward pass is deterministic without float atomics: the caller groups the
// positions by token on the CPU (it knows the tokens) into `buckets`:
//   buckets[3u], buckets[3u+1], buckets[3u+2] = token, first, count   for u < n_buckets
//   (one bucket per position; those past the distinct tokens are empty: count 0),
//   then the positions, sorted by token and ascending within a token.
// One invocation per (bucket, channel) adds its positions up in order. The position
// gradient dwpe is a column sum over B and goes through sum_rows.

struct Params {
  B: u32, T: u32, C: u32, n_buckets: u32,
  wte_offset: u32, wpe_offset: u32, positions: u32, format: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> tokens: array<u32>;
@group(0) @binding(2) var<storage, read> wte: array<u32>;  // f32 bits, or 16-bit pairs
@group(0) @binding(3) var<storage, read> wpe: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read> dout: array<f32>;
@group(0) @binding(6) var<storage, read_write> dwte: array<f32>;
@group(0) @binding(7) var<storage, read> buckets: array<u32>;

@compute @workgroup_size(64)
fn embedding_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= p.B * p.T * p.C) { return; }
  let c = i % p.C;
  let bt = i / p.C;
  let t = bt % p.T;
  let j = p.wte_offset + tokens[bt] * p.C + c;
  var e = widen16(wte[word16(j, p.format)], j, p.format);
  if (p.positions != 0u) {
    let k = p.wpe_offset + t * p.C + c;
    e += widen16(wpe[word16(k, p.format)], k, p.format);
  }
  out[i] = e;
}

@compute @workgroup_size(64)
fn embedding_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= p.n_buckets * p.C) { return; }
  let u = i / p.C;
  let c = i % p.C;
  let token = buckets[3u * u];
  let first = 3u * p.n_buckets + buckets[3u * u + 1u];
  let count = buckets[3u * u + 2u];
  if (count == 0u) { return; }  // padding: the batch has fewer distinct tokens than positions
  var acc = 0.0;
  for (var j = 0u; j < count; j++) {
    acc += dout[buckets[first + j] * p.C + c];
  }
  dwte[p.wte_offset + token * p.C + c] += acc;
}
