// Global gradient norm and the clip scale, deterministically (a fixed two-pass tree):
//   grad_norm_partial: workgroup g sums the squares of elements [g·4096, (g+1)·4096)
//                      in a fixed order → partial[g]
//   grad_norm_final:   one workgroup sums the partials → result = [‖g‖₂, clip scale]
// clip scale = min(1, max_norm / (‖g‖ + 1e-6)), as torch.nn.utils.clip_grad_norm_;
// max_norm ≤ 0 disables clipping (scale 1).

struct Params { n: u32, offset: u32, max_norm: f32, n_partials: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> grads: array<f32>;
@group(0) @binding(2) var<storage, read_write> partial: array<f32>;
@group(0) @binding(3) var<storage, read_write> result: array<f32>;

const WG: u32 = 256u;  // workgroup size of the row kernels; reduce_* (reduce.wgsl) reduce over it
const PER_THREAD: u32 = 16u;  // a workgroup covers WG · PER_THREAD = 4096 elements

@compute @workgroup_size(WG)
fn grad_norm_partial(
  @builtin(local_invocation_index) lid: u32,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let g = wid.x + wid.y * nwg.x;
  if (g >= p.n_partials) { return; }
  var acc = 0.0;
  for (var k = 0u; k < PER_THREAD; k++) {
    let i = g * WG * PER_THREAD + k * WG + lid;
    if (i < p.n) {
      let x = grads[p.offset + i];
      acc += x * x;
    }
  }
  let total = reduce_sum(acc, lid);
  if (lid == 0u) { partial[g] = total; }
}

@compute @workgroup_size(WG)
fn grad_norm_final(@builtin(local_invocation_index) lid: u32) {
  var acc = 0.0;
  for (var i = lid; i < p.n_partials; i += WG) { acc += partial[i]; }
  let norm = sqrt(reduce_sum(acc, lid));
  if (lid == 0u) {
    result[0] = norm;
    result[1] = select(1.0, min(1.0, p.max_norm / (norm + 1e-6)), p.max_norm > 0.0);
  }
}
