// Causal self-attention on a block's fused QKV layout, FlashAttention style: the
// (B, NH, T, T) scores are never stored. The forward pass keeps an online softmax (a
// running max and sum) and saves one number per query row, the log-sum-exp; the
// backward pass recomputes each probability from it.
//
// qkv  (B, T_cap, QKV): for each position [q: NH·HS | k: NKV·HS | v: NKV·HS], QKV =
//                  C + 2·NKV·HS, HS = C / NH ≤ 4·WG; head h owns channels h*HS ..
//                  (h+1)*HS of q. Grouped-query attention: query head h reads kv head
//                  h / G, G = NH / NKV (transformers' repeat_kv). NKV = NH is GPT-2's
//                  multi-head attention, QKV = 3C.
// lse  (B, NH, T − t0): log Σ_t2 exp(s[t, t2]) per query row, s = q·k / sqrt(HS).
// out  (B, T_cap, C): heads side by side, ready for the output projection.
// Only query rows t0 .. T are computed, against keys 0 .. t: in training t0 = 0 and
// T_cap = T; a KV-cache decode step has t0 = T − 1 and the cache's capacity as T_cap.
//
// One workgroup per (b, h, t) row; its WG invocations take the keys WG at a time (a
// tile), one key each, and then share the tile's probabilities to accumulate the head's
// HS output channels, up to 4 per invocation.
// Backward needs no float atomics: the query side (dq, and delta = dout·out) is computed
// per (b, h, t) row, the key side (dk, dv) per (b, kv head j, t2) column in a second
// pass that gathers over the rows below the diagonal of each of j's G query heads in
// turn: a kv head's gradient is the sum over its group, in a fixed order.

struct Params { B: u32, T: u32, C: u32, NH: u32, t0: u32, T_cap: u32, NKV: u32, _p1: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;
@group(0) @binding(2) var<storage, read_write> lse: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> dout: array<f32>;
@group(0) @binding(5) var<storage, read_write> delta: array<f32>;  // (B, NH, T) dout·out per row
@group(0) @binding(6) var<storage, read_write> dqkv: array<f32>;  // (B, T, QKV) as qkv

const WG: u32 = 64u;  // workgroup size = keys per tile; reduce_* (reduce.wgsl) reduce over it
const SLOTS: u32 = 4u;  // head channels per invocation: HS ≤ SLOTS · WG

// One tile's per-key weights, shared so every invocation can accumulate its channels.
var<workgroup> tile_a: array<f32, WG>;
var<workgroup> tile_b: array<f32, WG>;

// Where a (b, h, t) row's pieces live: query head h reads kv head h / G, whose key and
// value channels start at k0 and v0 of a qkv row of w = QKV channels; `flat` is also
// the row's index in lse.
struct Row { b: u32, h: u32, t: u32, hs: u32, flat: u32, scale: f32, w: u32, k0: u32, v0: u32 }

// A row of query head h, with the channels of kv head kv.
fn make_row(b: u32, h: u32, kv: u32, t: u32, flat: u32) -> Row {
  let hs = p.C / p.NH;
  let k0 = p.C + kv * hs;
  return Row(b, h, t, hs, flat, 1.0 / sqrt(f32(hs)), p.C + 2u * p.NKV * hs, k0, k0 + p.NKV * hs);
}

fn group_size() -> u32 {
  return p.NH / p.NKV;  // G, query heads per kv head
}

fn row_of(flat: u32) -> Row {
  let rows = p.T - p.t0;  // query rows per (b, h)
  let h = (flat / rows) % p.NH;
  return make_row(flat / (rows * p.NH), h, h / group_size(), p.t0 + flat % rows, flat);
}

fn row_count() -> u32 {
  return p.B * p.NH * (p.T - p.t0);
}

// Index of channel 0 at position t of head h's query, and of its kv head's key and value.
fn q_at(r: Row, t: u32) -> u32 {
  return (r.b * p.T_cap + t) * r.w + r.h * r.hs;
}

fn k_at(r: Row, t: u32) -> u32 {
  return (r.b * p.T_cap + t) * r.w + r.k0;
}

fn v_at(r: Row, t: u32) -> u32 {
  return (r.b * p.T_cap + t) * r.w + r.v0;
}

// Index of head h's channel 0 at position t in a (B, T_cap, C) tensor.
fn head_at(r: Row, t: u32) -> u32 {
  return (r.b * p.T_cap + t) * p.C + r.h * r.hs;
}

// x[i..i+HS] · y[j..j+HS] for the dot products of one key with one query (or dout
// with a value).
fn dot_qkv(i: u32, j: u32, hs: u32) -> f32 {
  var s = 0.0;
  for (var d = 0u; d < hs; d++) { s += qkv[i + d] * qkv[j + d]; }
  return s;
}

fn dot_dout_qkv(i: u32, j: u32, hs: u32) -> f32 {
  var s = 0.0;
  for (var d = 0u; d < hs; d++) { s += dout[i + d] * qkv[j + d]; }
  return s;
}

@compute @workgroup_size(WG)
fn attention_forward(
  @builtin(local_invocation_index) lid: u32,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let flat = wid.x + wid.y * nwg.x;
  if (flat >= row_count()) { return; }
  let r = row_of(flat);
  let q = q_at(r, r.t);
  // An online softmax over tiles of WG keys: each score is computed once. (Two passes,
  // the normaliser first, would save the per-tile reductions but compute every score
  // twice; on lavapipe that was 9% slower at T = 128.)
  var m = -3.0e38;  // running max of the scores so far
  var l = 0.0;      // running Σ exp(s − m)
  var acc = array<f32, SLOTS>(0.0, 0.0, 0.0, 0.0);  // Σ exp(s − m) v[d], d = lid + j·WG
  for (var base = 0u; base <= r.t; base += WG) {
    let t2 = base + lid;
    var s = -3.0e38;
    if (t2 <= r.t) { s = dot_qkv(q, k_at(r, t2), r.hs) * r.scale; }
    let m_new = max(m, reduce_max(s, lid));
    var e = 0.0;
    if (t2 <= r.t) { e = exp(s - m_new); }
    let rescale = exp(m - m_new);  // the old terms, relative to the new max
    l = l * rescale + reduce_sum(e, lid);
    m = m_new;
    tile_a[lid] = e;
    workgroupBarrier();
    let n = min(WG, r.t + 1u - base);
    for (var j = 0u; j < SLOTS; j++) {
      let d = lid + j * WG;
      if (d < r.hs) {
        var a = acc[j] * rescale;
        for (var i = 0u; i < n; i++) { a += tile_a[i] * qkv[v_at(r, base + i) + d]; }
        acc[j] = a;
      }
    }
    workgroupBarrier();  // the tile is read before the next one overwrites it
  }
  let o = head_at(r, r.t);
  for (var j = 0u; j < SLOTS; j++) {
    let d = lid + j * WG;
    if (d < r.hs) { out[o + d] = acc[j] / l; }
  }
  if (lid == 0u) { lse[r.flat] = m + log(l); }
}

// The probability p[t, t2] = exp(s − lse[t]) recomputed from the saved log-sum-exp.
fn prob(r: Row, t: u32, t2: u32, row_lse: f32) -> f32 {
  return exp(dot_qkv(q_at(r, t), k_at(r, t2), r.hs) * r.scale - row_lse);
}

// Per query row t:  delta = dout[t]·out[t] (= Σ_t2 p·dp, the softmax's correction);
//   ds[t2] = p[t2] (dout[t]·v[t2] − delta);  dq = scale · Σ_t2 ds[t2] k[t2].
@compute @workgroup_size(WG)
fn attention_backward_query(
  @builtin(local_invocation_index) lid: u32,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let flat = wid.x + wid.y * nwg.x;
  if (flat >= row_count()) { return; }
  let r = row_of(flat);
  let g = head_at(r, r.t);
  var local_dot = 0.0;
  for (var d = lid; d < r.hs; d += WG) { local_dot += dout[g + d] * out[g + d]; }
  let dlt = reduce_sum(local_dot, lid);
  if (lid == 0u) { delta[r.flat] = dlt; }
  let row_lse = lse[r.flat];
  var acc = array<f32, SLOTS>(0.0, 0.0, 0.0, 0.0);
  for (var base = 0u; base <= r.t; base += WG) {
    let t2 = base + lid;
    var ds = 0.0;
    if (t2 <= r.t) {
      ds = prob(r, r.t, t2, row_lse) * (dot_dout_qkv(g, v_at(r, t2), r.hs) - dlt);
    }
    tile_a[lid] = ds;
    workgroupBarrier();
    let n = min(WG, r.t + 1u - base);
    for (var j = 0u; j < SLOTS; j++) {
      let d = lid + j * WG;
      if (d < r.hs) {
        var a = acc[j];
        for (var i = 0u; i < n; i++) { a += tile_a[i] * qkv[k_at(r, base + i) + d]; }
        acc[j] = a;
      }
    }
    workgroupBarrier();
  }
  let dq = q_at(r, r.t);
  for (var j = 0u; j < SLOTS; j++) {
    let d = lid + j * WG;
    if (d < r.hs) { dqkv[dq + d] = acc[j] * r.scale; }
  }
}

// Per key column t2 of kv head kv (one workgroup per (b, kv, t2), B·NKV·T of them):
// gathers over the rows t >= t2 of each query head h of the group, h = kv·G .. kv·G + G − 1,
//   dk[t2] = scale · Σ_h Σ_t ds_h[t, t2] q_h[t],   dv[t2] = Σ_h Σ_t p_h[t, t2] dout_h[t].
// Runs after attention_backward_query, which wrote every row's delta (t0 = 0 here).
@compute @workgroup_size(WG)
fn attention_backward_key(
  @builtin(local_invocation_index) lid: u32,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let flat = wid.x + wid.y * nwg.x;
  if (flat >= p.B * p.NKV * p.T) { return; }
  let group = group_size();
  let kv = (flat / p.T) % p.NKV;
  let t2 = flat % p.T;
  // the column's kv head, and (until the loop sets h) the group's first query head
  var r = make_row(flat / (p.T * p.NKV), kv * group, kv, t2, 0u);
  let v = v_at(r, t2);
  var acc_k = array<f32, SLOTS>(0.0, 0.0, 0.0, 0.0);
  var acc_v = array<f32, SLOTS>(0.0, 0.0, 0.0, 0.0);
  for (var h = kv * group; h < (kv + 1u) * group; h++) {
    r.h = h;
    let rows = (r.b * p.NH + h) * p.T;  // lse/delta index of this (b, h)'s row 0
    for (var base = t2; base < p.T; base += WG) {
      let t = base + lid;
      var pr = 0.0;
      var ds = 0.0;
      if (t < p.T) {
        pr = prob(r, t, t2, lse[rows + t]);
        ds = pr * (dot_dout_qkv(head_at(r, t), v, r.hs) - delta[rows + t]);
      }
      tile_a[lid] = ds;
      tile_b[lid] = pr;
      workgroupBarrier();
      let n = min(WG, p.T - base);
      for (var j = 0u; j < SLOTS; j++) {
        let d = lid + j * WG;
        if (d < r.hs) {
          var ak = acc_k[j];
          var av = acc_v[j];
          for (var i = 0u; i < n; i++) {
            ak += tile_a[i] * qkv[q_at(r, base + i) + d];
            av += tile_b[i] * dout[head_at(r, base + i) + d];
          }
          acc_k[j] = ak;
          acc_v[j] = av;
        }
      }
      workgroupBarrier();
    }
  }
  let dk = k_at(r, t2);
  for (var j = 0u; j < SLOTS; j++) {
    let d = lid + j * WG;
    if (d < r.hs) {
      dqkv[dk + d] = acc_k[j] * r.scale;
      dqkv[v + d] = acc_v[j];
    }
  }
}
