// Residual connection.
//   forward:  out = inp1 + inp2
//   backward: dinp1 += dout, dinp2 += dout   (the gradient flows unchanged to both)

struct Params { n: u32, _p0: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> inp1: array<f32>;
@group(0) @binding(2) var<storage, read> inp2: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> dout: array<f32>;
@group(0) @binding(5) var<storage, read_write> dinp1: array<f32>;
@group(0) @binding(6) var<storage, read_write> dinp2: array<f32>;

@compute @workgroup_size(64)
fn residual_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= p.n) { return; }
  out[i] = inp1[i] + inp2[i];
}

@compute @workgroup_size(64)
fn residual_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= p.n) { return; }
  let d = dout[i];
  dinp1[i] += d;
  dinp2[i] += d;
}
