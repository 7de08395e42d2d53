//! GGUF, the file llama.cpp, Ollama and LM Studio run: written by Kiln itself, and read
//! back defensively (the test of the writer, and a stranger's file).
//!
//! Layout (version 3, little-endian):
//!   magic "GGUF" | version u32 | tensor count u64 | key/value count u64
//!   key/values: key (string), value type (u32), value
//!   tensor infos: name (string), dims (u32 count, then u64 each, innermost first: a
//!                 PyTorch (rows, cols) matrix is [cols, rows]), ggml type (u32), offset
//!                 (u64, from the start of the data, a multiple of the alignment)
//!   padding to `general.alignment` (32 unless the file says otherwise), then the data.
//! A string is a u64 byte count and UTF-8 bytes; an array, its element type (u32), a u64
//! count and the elements.
//!
//! [`model`] maps a Kiln model (GPT-2 or Llama family) to llama.cpp's tensor names and
//! keys; [`quant`] holds the f32, f16 and Q8_0 encodings.

pub mod model;
pub mod quant;

use crate::error::{KilnError, Result};
pub use quant::Encoding;

fn bad(m: impl std::fmt::Display) -> KilnError {
    KilnError::Checkpoint(format!("GGUF: {m}"))
}

pub const MAGIC: &[u8; 4] = b"GGUF";
pub const VERSION: u32 = 3;
/// The data's alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: usize = 32;
/// The most dimensions a ggml tensor has.
const MAX_DIMS: usize = 4;
/// An array nested deeper than this is refused (llama.cpp's keys nest one deep at most).
const MAX_NESTING: usize = 2;

/// A metadata value, typed as the file types it.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    /// The elements' type id, and the elements (all of that type).
    Array(u32, Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    /// GGUF's type id of the value.
    pub fn type_id(&self) -> u32 {
        match self {
            Value::U8(_) => 0,
            Value::I8(_) => 1,
            Value::U16(_) => 2,
            Value::I16(_) => 3,
            Value::U32(_) => 4,
            Value::I32(_) => 5,
            Value::F32(_) => 6,
            Value::Bool(_) => 7,
            Value::Str(_) => 8,
            Value::Array(..) => 9,
            Value::U64(_) => 10,
            Value::I64(_) => 11,
            Value::F64(_) => 12,
        }
    }

    pub fn strings(items: impl IntoIterator<Item = String>) -> Value {
        Value::Array(8, items.into_iter().map(Value::Str).collect())
    }

    pub fn i32s(items: impl IntoIterator<Item = i32>) -> Value {
        Value::Array(5, items.into_iter().map(Value::I32).collect())
    }

    pub fn as_str(&self) -> Option<&str> {
        if let Value::Str(s) = self {
            Some(s)
        } else {
            None
        }
    }

    /// An unsigned value of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            _ => None,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Value::U8(v) => out.push(*v),
            Value::I8(v) => out.extend(v.to_le_bytes()),
            Value::U16(v) => out.extend(v.to_le_bytes()),
            Value::I16(v) => out.extend(v.to_le_bytes()),
            Value::U32(v) => out.extend(v.to_le_bytes()),
            Value::I32(v) => out.extend(v.to_le_bytes()),
            Value::F32(v) => out.extend(v.to_le_bytes()),
            Value::Bool(v) => out.push(u8::from(*v)),
            Value::Str(s) => write_str(out, s),
            Value::Array(t, items) => {
                out.extend(t.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                items.iter().for_each(|v| v.write(out));
            }
            Value::U64(v) => out.extend(v.to_le_bytes()),
            Value::I64(v) => out.extend(v.to_le_bytes()),
            Value::F64(v) => out.extend(v.to_le_bytes()),
        }
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// A tensor to write: its name, its PyTorch shape (outermost first) and its values, in
/// row-major order, with the encoding to store them in.
pub struct Tensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
    pub encoding: Encoding,
}

/// A GGUF file of these key/values and tensors, the data aligned to [`DEFAULT_ALIGNMENT`]
/// (`general.alignment`, when among the keys, must say the same).
pub fn write(kv: &[(String, Value)], tensors: &[Tensor]) -> Result<Vec<u8>> {
    let align = DEFAULT_ALIGNMENT;
    if let Some((_, v)) = kv.iter().find(|(k, _)| k == "general.alignment") {
        if v.as_u64() != Some(align as u64) {
            return Err(bad(format!("general.alignment is {v:?}; Kiln writes {align}")));
        }
    }
    let mut out = Vec::new();
    out.extend(MAGIC);
    out.extend(VERSION.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((kv.len() as u64).to_le_bytes());
    for (key, value) in kv {
        write_str(&mut out, key);
        out.extend(value.type_id().to_le_bytes());
        value.write(&mut out);
    }
    let mut data: Vec<u8> = Vec::new();
    for t in tensors {
        let row = *t.shape.last().ok_or_else(|| bad(format!("{} has no dimensions", t.name)))?;
        if t.encoding.row_bytes(row).is_none() {
            return Err(bad(format!("{} has rows of {row} values, not whole Q8_0 blocks", t.name)));
        }
        if t.shape.iter().product::<usize>() != t.values.len() {
            return Err(bad(format!("{} holds {} values, not its shape {:?}", t.name, t.values.len(), t.shape)));
        }
        write_str(&mut out, &t.name);
        out.extend((t.shape.len() as u32).to_le_bytes());
        for &d in t.shape.iter().rev() {
            out.extend((d as u64).to_le_bytes());
        }
        out.extend(t.encoding.ggml_type().to_le_bytes());
        out.extend((data.len() as u64).to_le_bytes());
        data.extend(t.encoding.encode(&t.values));
        data.resize(data.len().next_multiple_of(align), 0);
    }
    out.resize(out.len().next_multiple_of(align), 0);
    out.extend(data);
    Ok(out)
}

/// A GGUF file read back: its key/values in order, its tensors' places, and where the
/// data starts.
#[derive(Debug)]
pub struct Gguf<'a> {
    pub version: u32,
    pub kv: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: usize,
    /// The data section: each tensor's offset counts from its start.
    pub data: &'a [u8],
    /// Where the data section starts in the file.
    pub data_start: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// PyTorch order: outermost first (the file stores them innermost first).
    pub shape: Vec<usize>,
    pub encoding: Encoding,
    pub offset: usize,
    pub bytes: usize,
}

impl<'a> Gguf<'a> {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.kv.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// A tensor's values, decoded to f32.
    pub fn values(&self, t: &TensorInfo) -> Vec<f32> {
        t.encoding.decode(&self.data[t.offset..t.offset + t.bytes])
    }
}

/// A cursor over a stranger's bytes: every count is checked against what is left.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end =
            self.at.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or_else(|| {
                bad(format!("the file ends inside {what} (byte {} of {})", self.at, self.bytes.len()))
            })?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        Ok(self.take(N, what)?.try_into().expect("N bytes"))
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count of items of at least `min_bytes` each, which the rest of the file must hold.
    fn count(&mut self, min_bytes: usize, what: &str) -> Result<usize> {
        let n = self.u64(what)?;
        let left = (self.bytes.len() - self.at) as u64;
        if n.saturating_mul(min_bytes as u64) > left {
            return Err(bad(format!("{what} says {n}, more than the {left} bytes left can hold")));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.count(1, what)?;
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| bad(format!("{what} is not UTF-8")))
    }

    fn value(&mut self, t: u32, depth: usize, what: &str) -> Result<Value> {
        Ok(match t {
            0 => Value::U8(self.array::<1>(what)?[0]),
            1 => Value::I8(i8::from_le_bytes(self.array(what)?)),
            2 => Value::U16(u16::from_le_bytes(self.array(what)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(what)?)),
            4 => Value::U32(self.u32(what)?),
            5 => Value::I32(i32::from_le_bytes(self.array(what)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(what)?)),
            7 => match self.array::<1>(what)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(bad(format!("{what} is a bool of {b}"))),
            },
            8 => Value::Str(self.string(what)?),
            9 if depth >= MAX_NESTING => return Err(bad(format!("{what} nests arrays deeper than {MAX_NESTING}"))),
            9 => {
                let inner = self.u32(what)?;
                let n = self.count(1, what)?;
                let items = (0..n).map(|_| self.value(inner, depth + 1, what)).collect::<Result<_>>()?;
                Value::Array(inner, items)
            }
            10 => Value::U64(self.u64(what)?),
            11 => Value::I64(i64::from_le_bytes(self.array(what)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(what)?)),
            t => return Err(bad(format!("{what} has value type {t}, which GGUF does not define"))),
        })
    }
}

/// Reads a GGUF file's header and checks its tensors against the format: known types,
/// at most four dimensions, offsets aligned and inside the data, no two overlapping.
pub fn read(bytes: &[u8]) -> Result<Gguf<'_>> {
    let mut c = Cursor { bytes, at: 0 };
    if c.take(4, "the magic")? != MAGIC {
        return Err(bad("not a GGUF file (it does not start with \"GGUF\")"));
    }
    let version = c.u32("the version")?;
    if !(2..=VERSION).contains(&version) {
        return Err(bad(format!("version {version}; Kiln reads versions 2 and 3")));
    }
    // a tensor info is at least 8 (name) + 4 + 4 + 8 bytes; a key/value at least 8 + 4 + 1
    let n_tensors = c.count(24, "the tensor count")?;
    let n_kv = c.count(13, "the key/value count")?;
    let mut kv: Vec<(String, Value)> = Vec::with_capacity(n_kv);
    for i in 0..n_kv {
        let key = c.string(&format!("key {i}"))?;
        let t = c.u32(&format!("{key}'s type"))?;
        let value = c.value(t, 0, &key)?;
        if kv.iter().any(|(k, _)| *k == key) {
            return Err(bad(format!("key {key} appears twice")));
        }
        kv.push((key, value));
    }
    let alignment = match kv.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, v)) => match v.as_u64() {
            Some(a) if a.is_power_of_two() && a <= 1 << 16 => a as usize,
            _ => return Err(bad(format!("general.alignment is {v:?}, not a power of two up to 65536"))),
        },
    };
    let mut tensors: Vec<TensorInfo> = Vec::with_capacity(n_tensors);
    for i in 0..n_tensors {
        let name = c.string(&format!("tensor {i}'s name"))?;
        let n_dims = c.u32(&format!("{name}'s dimension count"))? as usize;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(bad(format!("{name} has {n_dims} dimensions; ggml tensors have 1 to {MAX_DIMS}")));
        }
        let mut shape = (0..n_dims).map(|_| c.u64(&name).map(|d| d as usize)).collect::<Result<Vec<_>>>()?;
        shape.reverse();
        let t = c.u32(&format!("{name}'s type"))?;
        let encoding = Encoding::from_ggml_type(t)
            .ok_or_else(|| bad(format!("{name} has ggml type {t}; Kiln reads f32, f16 and Q8_0")))?;
        let offset = c.u64(&format!("{name}'s offset"))? as usize;
        if offset % alignment != 0 {
            return Err(bad(format!("{name} starts at {offset}, not a multiple of the alignment {alignment}")));
        }
        let count = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d).filter(|_| d > 0));
        let rows = count.and_then(|n| n.checked_div(shape[n_dims - 1]));
        let row = rows.and_then(|_| encoding.row_bytes(shape[n_dims - 1]));
        let size = rows.zip(row).and_then(|(r, b)| r.checked_mul(b)).ok_or_else(|| {
            bad(format!("{name} has shape {shape:?}, which is empty, overflows, or is not whole {encoding:?} rows"))
        })?;
        if tensors.iter().any(|x| x.name == name) {
            return Err(bad(format!("tensor {name} appears twice")));
        }
        tensors.push(TensorInfo { name, shape, encoding, offset, bytes: size });
    }
    let data_start = c.at.next_multiple_of(alignment);
    let data = bytes.get(data_start..).unwrap_or_default();
    let mut by_place: Vec<&TensorInfo> = tensors.iter().collect();
    by_place.sort_by_key(|t| t.offset);
    let mut end = 0;
    for t in by_place {
        if t.offset < end {
            return Err(bad(format!("{} overlaps the tensor before it", t.name)));
        }
        end = t.offset + t.bytes;
        if end > data.len() {
            return Err(bad(format!("{} runs past the end of the file ({end} of {} data bytes)", t.name, data.len())));
        }
    }
    Ok(Gguf { version, kv, tensors, alignment, data, data_start })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Vec<u8> {
        let kv = vec![
            ("general.architecture".to_string(), Value::Str("gpt2".into())),
            ("general.alignment".to_string(), Value::U32(32)),
            ("tokenizer.ggml.tokens".to_string(), Value::strings(["a".to_string(), "b".to_string()])),
        ];
        let tensors = vec![
            Tensor {
                name: "w".into(),
                shape: vec![2, 32],
                values: (0..64).map(|i| i as f32).collect(),
                encoding: Encoding::Q8_0,
            },
            Tensor { name: "b".into(), shape: vec![3], values: vec![1.0, 2.0, 3.0], encoding: Encoding::F32 },
        ];
        write(&kv, &tensors).unwrap()
    }

    #[test]
    fn reads_back_what_it_writes() {
        let bytes = small();
        let g = read(&bytes).unwrap();
        assert_eq!(g.get("general.architecture").and_then(Value::as_str), Some("gpt2"));
        assert_eq!(g.data_start % 32, 0);
        let b = g.tensor("b").unwrap();
        assert_eq!((b.offset % 32, b.shape.clone()), (0, vec![3]));
        assert_eq!(g.values(b), vec![1.0, 2.0, 3.0]);
        assert_eq!(g.tensor("w").unwrap().bytes, 2 * 34);
    }

    #[test]
    fn refuses_cut_and_lying_files() {
        let bytes = small();
        // inside the last tensor's values (the padding after them is not needed)
        let g = read(&bytes).unwrap();
        let inside = g.data_start + g.tensor("b").unwrap().offset + 11;
        for cut in [3, 10, 30, inside] {
            assert!(read(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        // a tensor count of 2^60
        let mut lying = bytes.clone();
        lying[8..16].copy_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(read(&lying).unwrap_err().to_string().contains("tensor count"));
        let mut magic = bytes;
        magic[0] = b'X';
        assert!(read(&magic).unwrap_err().to_string().contains("not a GGUF file"));
    }
}
