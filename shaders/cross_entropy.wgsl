// Softmax + cross-entropy with a weight per position — the one loss kernel of every stage.
//
// logits  (N, V)   one row per position
// targets (N)      the token each position should predict (u32, < V)
// weights (N)      what the position counts for: 1/N_tokens in pretraining, 0 for masked
//                  prompt or padding tokens, a log-ratio coefficient in DPO/PPO
// forward:  losses[i]     = w_i · (logsumexp(logits_i) − logits_i[target_i]),  0 where w_i = 0
// backward: dlogits[i, v] = w_i · (softmax(logits_i)[v] − [v = target_i]), written in
//           place of the logits (llm.c's fused classifier): no second (N, V) buffer
//
// One workgroup per row; max and sum are tree reductions in workgroup memory, and the
// max is subtracted before exp, so large logits neither overflow nor lose precision.

struct Params { N: u32, V: u32, _p0: u32, _p1: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> targets: array<u32>;
@group(0) @binding(3) var<storage, read> weights: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;  // losses (N) or dlogits (N, V)

const WG: u32 = 256u;  // workgroup size of the row kernels; reduce_* (reduce.wgsl) reduce over it

// (max, Σ exp(logit − max)) of one row.
fn softmax_stats(base: u32, lid: u32) -> vec2<f32> {
  var m = -3.0e38;
  for (var v = lid; v < p.V; v += WG) { m = max(m, logits[base + v]); }
  let row_max = reduce_max(m, lid);
  var s = 0.0;
  for (var v = lid; v < p.V; v += WG) { s += exp(logits[base + v] - row_max); }
  return vec2<f32>(row_max, reduce_sum(s, lid));
}

@compute @workgroup_size(WG)
fn cross_entropy_forward(
  @builtin(local_invocation_index) lid: u32,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.N) { return; }
  let base = row * p.V;
  let stats = softmax_stats(base, lid);
  if (lid == 0u) {
    let w = weights[row];
    let nll = log(stats.y) + stats.x - logits[base + targets[row]];
    out[row] = select(w * nll, 0.0, w == 0.0);
  }
}

// In place: `out` holds row i's logits on entry and its gradient on exit. Each invocation
// reads and writes only its own columns v ≡ lid (mod WG), and the reductions' barriers
// put every read of the statistics before any write.
@compute @workgroup_size(WG)
fn cross_entropy_backward(
  @builtin(local_invocation_index) lid: u32,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.N) { return; }
  let base = row * p.V;
  var m = -3.0e38;
  for (var v = lid; v < p.V; v += WG) { m = max(m, out[base + v]); }
  let row_max = reduce_max(m, lid);
  var s = 0.0;
  for (var v = lid; v < p.V; v += WG) { s += exp(out[base + v] - row_max); }
  let inv_sum = 1.0 / reduce_sum(s, lid);
  let w = weights[row];
  let target_id = targets[row];
  for (var v = lid; v < p.V; v += WG) {
    let prob = exp(out[base + v] - row_max) * inv_sum;
    let indicator = select(0.0, 1.0, v == target_id);
    out[base + v] = select(w * (prob - indicator), 0.0, w == 0.0);
  }
}
