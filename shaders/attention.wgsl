// Causal multi-head self-attention on a GPT block's fused QKV layout.
//
// qkv  (B, T_cap, 3C): for each position, the C query, C key and C value channels;
//                  head h owns channels h*HS .. (h+1)*HS of each, HS = C / NH.
// att  (B, NH, T − t0, T): softmax probabilities, saved for the backward pass; zero
//                  above the diagonal (a query never sees a later key).
// out  (B, T_cap, C): heads side by side, ready for the output projection.
// Only query rows t0 .. T are computed, against keys 0 .. t: in training t0 = 0 and
// T_cap = T; a KV-cache decode step has t0 = T − 1 and the cache's capacity as T_cap.
//
// One workgroup per (b, h, t) row. Softmax is the stable form: subtract the row max.
// Backward needs no float atomics: the query side (dq, and dpreatt into `datt`) is
// computed per row, the key side (dk, dv) per column in a second pass that gathers
// over the rows below the diagonal.

struct Params { B: u32, T: u32, C: u32, NH: u32, t0: u32, T_cap: u32, _p0: u32, _p1: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;
@group(0) @binding(2) var<storage, read_write> att: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> dout: array<f32>;
@group(0) @binding(5) var<storage, read_write> datt: array<f32>;  // scratch, shape of att
@group(0) @binding(6) var<storage, read_write> dqkv: array<f32>;

const WG: u32 = 64u;  // workgroup size of the row kernels; reduce_* (reduce.wgsl) reduce over it

// Where a (b, h, t) row's pieces live.
struct Row { b: u32, h: u32, t: u32, hs: u32, att: u32, scale: f32 }

fn row_of(flat: u32) -> Row {
  let hs = p.C / p.NH;
  let rows = p.T - p.t0;  // query rows per (b, h)
  return Row(flat / (rows * p.NH), (flat / rows) % p.NH, p.t0 + flat % rows, hs, flat * p.T, 1.0 / sqrt(f32(hs)));
}

fn row_count() -> u32 {
  return p.B * p.NH * (p.T - p.t0);
}

// Index of channel 0 of head h of part (0 = q, 1 = k, 2 = v) at position t.
fn qkv_at(r: Row, t: u32, part: u32) -> u32 {
  return (r.b * p.T_cap + t) * 3u * p.C + part * p.C + r.h * r.hs;
}

// Index of head h's channel 0 at position t in a (B, T_cap, C) tensor.
fn head_at(r: Row, t: u32) -> u32 {
  return (r.b * p.T_cap + t) * p.C + r.h * r.hs;
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
  let q = qkv_at(r, r.t, 0u);
  // scores q·k / sqrt(HS) for keys 0..=t
  var local_max = -3.0e38;
  for (var t2 = lid; t2 <= r.t; t2 += WG) {
    let k = qkv_at(r, t2, 1u);
    var s = 0.0;
    for (var d = 0u; d < r.hs; d++) { s += qkv[q + d] * qkv[k + d]; }
    s *= r.scale;
    att[r.att + t2] = s;
    local_max = max(local_max, s);
  }
  let row_max = reduce_max(local_max, lid);
  var local_sum = 0.0;
  for (var t2 = lid; t2 <= r.t; t2 += WG) {
    let e = exp(att[r.att + t2] - row_max);
    att[r.att + t2] = e;
    local_sum += e;
  }
  let inv_sum = 1.0 / reduce_sum(local_sum, lid);
  for (var t2 = lid; t2 < p.T; t2 += WG) {
    if (t2 <= r.t) { att[r.att + t2] *= inv_sum; } else { att[r.att + t2] = 0.0; }
  }
  storageBarrier();
  // out = att · V
  let o = head_at(r, r.t);
  for (var d = lid; d < r.hs; d += WG) {
    var acc = 0.0;
    for (var t2 = 0u; t2 <= r.t; t2++) {
      acc += att[r.att + t2] * qkv[qkv_at(r, t2, 2u) + d];
    }
    out[o + d] = acc;
  }
}

// Per query row t:  datt[t2] = dout[t]·v[t2];  dpreatt = att ⊙ (datt − Σ att⊙datt)
// (stored over datt);  dq = scale · Σ_t2 dpreatt[t2] k[t2].
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
  for (var t2 = lid; t2 <= r.t; t2 += WG) {
    let v = qkv_at(r, t2, 2u);
    var s = 0.0;
    for (var d = 0u; d < r.hs; d++) { s += dout[g + d] * qkv[v + d]; }
    datt[r.att + t2] = s;
    local_dot += att[r.att + t2] * s;
  }
  let dot = reduce_sum(local_dot, lid);
  for (var t2 = lid; t2 < p.T; t2 += WG) {
    if (t2 <= r.t) {
      datt[r.att + t2] = att[r.att + t2] * (datt[r.att + t2] - dot);
    } else {
      datt[r.att + t2] = 0.0;
    }
  }
  storageBarrier();
  let dq = qkv_at(r, r.t, 0u);
  for (var d = lid; d < r.hs; d += WG) {
    var acc = 0.0;
    for (var t2 = 0u; t2 <= r.t; t2++) {
      acc += datt[r.att + t2] * qkv[qkv_at(r, t2, 1u) + d];
    }
    dqkv[dq + d] = acc * r.scale;
  }
}

// Per key column t2 (the workgroup's "t"): gathers over the query rows t >= t2,
//   dk[t2] = scale · Σ_t dpreatt[t, t2] q[t],   dv[t2] = Σ_t att[t, t2] dout[t].
@compute @workgroup_size(WG)
fn attention_backward_key(
  @builtin(local_invocation_index) lid: u32,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let flat = wid.x + wid.y * nwg.x;
  if (flat >= row_count()) { return; }
  let r = row_of(flat);
  let t2 = r.t;
  let rows = (r.b * p.NH + r.h) * p.T;  // first row of this (b, h) in att (t0 = 0 here)
  let dk = qkv_at(r, t2, 1u);
  let dv = qkv_at(r, t2, 2u);
  for (var d = lid; d < r.hs; d += WG) {
    var acc_k = 0.0;
    var acc_v = 0.0;
    for (var t = t2; t < p.T; t++) {
      let a = (rows + t) * p.T + t2;
      acc_k += datt[a] * qkv[qkv_at(r, t, 0u) + d];
      acc_v += att[a] * dout[head_at(r, t) + d];
    }
    dqkv[dk + d] = acc_k * r.scale;
    dqkv[dv + d] = acc_v;
  }
}
