// Workgroup tree reductions, shared by the row-wise kernels (attention, cross_entropy,
// layernorm, grad_norm). WGSL has no #include: gpu/shaders.rs appends this file to the
// shaders that use it, and each of them declares `const WG: u32`, its workgroup size
// (a power of two). Every invocation of the workgroup must call these together.

var<workgroup> scratch: array<f32, WG>;

fn reduce_sum(v: f32, lid: u32) -> f32 {
  scratch[lid] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) { scratch[lid] += scratch[lid + s]; }
    workgroupBarrier();
  }
  let r = scratch[0];
  workgroupBarrier();  // everyone has read the result before scratch is reused
  return r;
}

fn reduce_max(v: f32, lid: u32) -> f32 {
  scratch[lid] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) { scratch[lid] = max(scratch[lid], scratch[lid + s]); }
    workgroupBarrier();
  }
  let r = scratch[0];
  workgroupBarrier();
  return r;
}
