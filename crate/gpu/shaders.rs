//! The WGSL sources, one file per op family, compiled into the binary, and what the Rust
//! side must agree with in each: its `struct Params` and its `@binding` numbers.
//!
//! Binding numbers are written once, in the WGSL: a dispatch names each buffer by the WGSL
//! variable it binds (`("inp1", inp1)`) and the number is read from the shader here. A
//! kernel's `struct Params` is written on both sides (so a WGSL file reads on its own) and
//! held together when its pipeline is first made: the same fields in the same order with
//! the same types, or a panic naming the difference. `tests/kernels.rs` checks that the
//! self-test makes every entry point's pipeline, so every pair is held together there.

/// One WGSL file in `shaders/`. Each `crate/gpu/NAME.rs` declares its own as `SHADER`.
#[derive(Clone, Copy, Debug)]
pub struct Shader {
    /// The op family, e.g. "residual".
    pub name: &'static str,
    /// The file's text.
    pub wgsl: &'static str,
}

// Told apart by name: hashing the whole text on every dispatch would be waste.
impl PartialEq for Shader {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
impl Eq for Shader {}
impl std::hash::Hash for Shader {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state)
    }
}

/// The workgroup reductions the row-wise kernels share (WGSL has no #include).
const REDUCE: &str = include_str!("../../shaders/reduce.wgsl");
/// The reading of weights stored in 16 bits, shared the same way.
const HALF16: &str = include_str!("../../shaders/half16.wgsl");

impl Shader {
    /// The WGSL to compile: the op family's file, plus the shared reductions and the
    /// 16-bit reading when it calls them.
    pub fn source(self) -> String {
        let mut source = self.wgsl.to_string();
        if self.wgsl.contains("reduce_sum(") || self.wgsl.contains("reduce_max(") {
            source = format!("{source}\n{REDUCE}");
        }
        if self.wgsl.contains("widen16(") {
            source = format!("{source}\n{HALF16}");
        }
        source
    }

    /// Its `@compute` entry points, in file order.
    pub fn entry_points(self) -> Vec<&'static str> {
        let mut entries = Vec::new();
        let mut compute = false;
        for line in code_lines(self.wgsl) {
            compute |= line.starts_with("@compute");
            if let (true, Some((_, rest))) = (compute, line.split_once("fn ")) {
                entries.push(rest.split('(').next().unwrap_or_default().trim());
                compute = false;
            }
        }
        entries
    }

    /// Its `struct Params` and storage bindings, read from the WGSL. Panics when the file
    /// does not declare them the way every kernel does (binding 0 the uniform `Params`,
    /// then `@group(0) @binding(N) var<storage, …> NAME: TYPE;` one a line).
    pub fn layout(self) -> Layout {
        let file = format!("shaders/{}.wgsl", self.name);
        let body = self
            .wgsl
            .split_once("struct Params")
            .and_then(|(_, rest)| rest.split_once('{'))
            .and_then(|(_, rest)| rest.split_once('}'))
            .unwrap_or_else(|| panic!("{file} declares no struct Params"))
            .0;
        let params = code_lines(body)
            .flat_map(|line| line.split(','))
            .map(str::trim)
            .filter(|field| !field.is_empty())
            .map(|field| {
                let (name, ty) = field.split_once(':').unwrap_or_else(|| panic!("{file}: Params field {field:?}"));
                (name.trim(), ty.trim())
            })
            .collect();
        let mut bindings = Vec::new();
        for line in code_lines(self.wgsl).filter(|line| line.starts_with("@group(")) {
            let number: u32 = line
                .strip_prefix("@group(0) @binding(")
                .and_then(|rest| rest.split(')').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{file}: expected `@group(0) @binding(N)` in {line:?}"));
            let var = line.split_once(" var").map_or("", |(_, rest)| rest);
            let var = var.split_once('>').map_or(var, |(_, rest)| rest);
            let var = var.split(':').next().unwrap_or_default().trim();
            assert!(
                bindings.iter().all(|&(v, n)| v != var && n != number),
                "{file}: binding {number} ({var}) declared twice"
            );
            bindings.push((var, number));
        }
        assert_eq!(bindings.first().map(|b| b.1), Some(0), "{file}: binding 0 must be the Params uniform");
        Layout { file, params, bindings: bindings.split_off(1) }
    }
}

/// Lines without their `//` comments, trimmed, blank ones left out.
fn code_lines(wgsl: &str) -> impl Iterator<Item = &str> {
    wgsl.lines().map(|l| l.split("//").next().unwrap_or_default().trim()).filter(|l| !l.is_empty())
}

/// What a shader declares that its dispatches must match.
#[derive(Debug)]
pub struct Layout {
    /// "shaders/NAME.wgsl", for messages.
    file: String,
    /// `struct Params`'s fields: (name, WGSL type), in order.
    pub params: Vec<(&'static str, &'static str)>,
    /// The storage bindings: (variable, binding number).
    pub bindings: Vec<(&'static str, u32)>,
}

impl Layout {
    /// The binding number of the WGSL variable `var`. Panics (a bug in the dispatch, never
    /// user input) when the shader has no such variable.
    pub fn binding(&self, entry: &str, var: &str) -> u32 {
        match self.bindings.iter().find(|b| b.0 == var) {
            Some(&(_, number)) => number,
            None => panic!("{entry}: {} binds no variable named {var:?}", self.file),
        }
    }

    /// Holds a Rust parameter struct (its [`Params::FIELDS`]) against the WGSL `struct
    /// Params`, 4-byte slot by slot: the same type in each slot, and the same name, compared
    /// without case (the WGSL writes shapes as llm.c does: `B`, `T`, `NH`), except padding
    /// (a name starting with `_`), which only has to be padding on both sides.
    pub fn check_params(&self, entry: &str, fields: &[(&str, &str)]) -> Result<(), String> {
        // [u32; 3] is three u32 slots; bytemuck's Pod and repr(C) leave no gaps between them
        let mut rust = Vec::new();
        for &(name, ty) in fields {
            let (elem, count) = match ty.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
                Some(array) => array.split_once(';').map_or((array, 0), |(e, n)| (e, n.trim().parse().unwrap_or(0))),
                None => (ty, 1),
            };
            let elem = elem.trim();
            if elem != "u32" && elem != "f32" {
                return Err(format!("{entry}: Params field {name}: {ty} is not u32, f32 or an array of them"));
            }
            rust.extend(std::iter::repeat_n((name, elem), count));
        }
        let same = |(a, at): (&str, &str), (b, bt): (&str, &str)| {
            at == bt && (a.starts_with('_') && b.starts_with('_') || a.eq_ignore_ascii_case(b))
        };
        for slot in 0..rust.len().max(self.params.len()) {
            let (r, w) = (rust.get(slot).copied(), self.params.get(slot).copied());
            if !matches!((r, w), (Some(r), Some(w)) if same(r, w)) {
                let show = |f: Option<(&str, &str)>| f.map_or("nothing".into(), |(n, t)| format!("{n}: {t}"));
                return Err(format!(
                    "{entry}: Params slot {slot} (byte {}) is {} in Rust but {} in {}",
                    4 * slot,
                    show(r),
                    show(w),
                    self.file
                ));
            }
        }
        Ok(())
    }
}

/// A kernel's uniform parameters as Rust lays them out: `#[repr(C)]`, u32 and f32 fields
/// (and arrays of them for padding). Declared with [`params!`], which lists the fields.
pub trait Params: bytemuck::Pod {
    /// (name, Rust type) of each field, in order.
    const FIELDS: &'static [(&'static str, &'static str)];
}

/// Declares a kernel's `Params` struct (`repr(C)`, `Pod`) and lists its fields for
/// [`Layout::check_params`].
macro_rules! params {
    ($(#[$meta:meta])* struct $name:ident { $($field:ident: $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
        struct $name {
            $($field: $ty),*
        }

        impl $crate::gpu::Params for $name {
            const FIELDS: &'static [(&'static str, &'static str)] = &[$((stringify!($field), stringify!($ty))),*];
        }
    };
}
pub(crate) use params;

#[cfg(test)]
mod tests {
    use crate::gpu::SHADERS;

    #[test]
    fn every_shader_declares_params_bindings_and_entry_points() {
        for shader in SHADERS {
            let layout = shader.layout();
            assert!(!layout.params.is_empty() && !layout.bindings.is_empty(), "{}", shader.name);
            assert!(!shader.entry_points().is_empty(), "{}", shader.name);
        }
        let residual = crate::gpu::residual::SHADER;
        assert_eq!(residual.entry_points(), ["residual_forward", "residual_backward"]);
        let layout = residual.layout();
        assert_eq!(layout.params, [("n", "u32"), ("_p0", "u32"), ("_p1", "u32"), ("_p2", "u32")]);
        assert_eq!(layout.bindings.len(), 6);
        assert_eq!(layout.binding("residual_forward", "inp2"), 2);
    }

    /// The check fails on each way the two structs can drift apart.
    #[test]
    fn a_params_struct_that_differs_from_the_wgsl_is_refused() {
        let layout = crate::gpu::attention::SHADER.layout(); // B, T, C, NH, t0, T_cap, NKV, _p1
        let good =
            [("b", "u32"), ("t", "u32"), ("c", "u32"), ("nh", "u32"), ("t0", "u32"), ("t_cap", "u32"), ("nkv", "u32")];
        let with = |tail: &[(&'static str, &'static str)]| [&good[..], tail].concat();
        assert_eq!(layout.check_params("e", &with(&[("_pad", "u32")])), Ok(()));
        assert_eq!(layout.check_params("e", &with(&[("_pad", "[u32; 1]")])), Ok(()));
        let swapped = [("t", "u32"), ("b", "u32"), ("c", "u32"), ("nh", "u32"), ("t0", "u32"), ("t_cap", "u32")];
        let swapped = [&swapped[..], &[("nkv", "u32"), ("_pad", "u32")]].concat();
        let err = layout.check_params("e", &swapped).unwrap_err();
        assert!(err.contains("slot 0 (byte 0) is t: u32 in Rust but B: u32"), "{err}");
        assert!(layout.check_params("e", &with(&[("_pad", "f32")])).is_err(), "a padding slot's type");
        assert!(layout.check_params("e", &with(&[])).is_err(), "a slot missing");
        assert!(layout.check_params("e", &with(&[("_pad", "[u32; 2]")])).is_err(), "a slot too many");
        assert!(layout.check_params("e", &with(&[("scale", "u32")])).is_err(), "a field for padding");
        let pad_for_field = [&good[..6], &[("_pad", "[u32; 2]")]].concat();
        assert!(layout.check_params("e", &pad_for_field).is_err(), "padding for a field");
        assert!(layout.check_params("e", &with(&[("_pad", "[u64; 1]")])).is_err(), "an 8-byte field");
    }

    #[test]
    #[should_panic(expected = "shaders/residual.wgsl binds no variable named \"inp3\"")]
    fn a_binding_the_wgsl_does_not_declare_is_refused() {
        crate::gpu::residual::SHADER.layout().binding("residual_forward", "inp3");
    }
}
