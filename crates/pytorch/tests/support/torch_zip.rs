//! Test support: writes a state dict in the zip + pickle format of `torch.save` (protocol 2,
//! the opcodes `torch.save` emits for an `OrderedDict` of contiguous tensors), so tests can
//! build sharded and broken checkpoints from the fixtures' tensors. Shared by
//! `crates/pytorch/tests` and `xtask`'s download tests (through `#[path]`).

#![allow(dead_code)]

use std::io::Write;

/// One tensor to save: name, safetensors dtype name (`F16`, `F32`, `BF16`, `BOOL`, …), shape
/// and row-major little-endian bytes.
pub struct Saved<'a> {
    pub name: &'a str,
    pub dtype: &'a str,
    pub shape: &'a [usize],
    pub data: &'a [u8],
}

fn storage_class(dtype: &str) -> &'static str {
    match dtype {
        "F16" => "HalfStorage",
        "BF16" => "BFloat16Storage",
        "F32" => "FloatStorage",
        "F64" => "DoubleStorage",
        "I64" => "LongStorage",
        "I32" => "IntStorage",
        "BOOL" => "BoolStorage",
        "U8" => "ByteStorage",
        other => panic!("no storage class for {other}"),
    }
}

fn element_size(dtype: &str) -> usize {
    match dtype {
        "BOOL" | "U8" | "I8" => 1,
        "F16" | "BF16" | "I16" => 2,
        "F32" | "I32" => 4,
        _ => 8,
    }
}

fn string(p: &mut Vec<u8>, s: &str) {
    p.push(b'X');
    p.extend((s.len() as u32).to_le_bytes());
    p.extend(s.as_bytes());
}

fn int(p: &mut Vec<u8>, v: usize) {
    p.push(b'J');
    p.extend((v as i32).to_le_bytes());
}

fn ints(p: &mut Vec<u8>, vs: &[usize]) {
    p.push(b'(');
    for &v in vs {
        int(p, v);
    }
    p.push(b't');
}

/// The `data.pkl` of a state dict of `tensors`, storage `i` keyed `"{i}"`.
pub fn state_dict_pickle(tensors: &[Saved]) -> Vec<u8> {
    let mut p = vec![0x80, 2];
    p.extend(b"ccollections\nOrderedDict\n)R(");
    for (i, t) in tensors.iter().enumerate() {
        string(&mut p, t.name);
        p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n(");
        p.push(b'(');
        string(&mut p, "storage");
        p.extend(format!("ctorch\n{}\n", storage_class(t.dtype)).as_bytes());
        string(&mut p, &i.to_string());
        string(&mut p, "cpu");
        int(&mut p, t.data.len() / element_size(t.dtype));
        p.extend(b"tQ");
        int(&mut p, 0);
        ints(&mut p, t.shape);
        let mut strides = vec![1usize; t.shape.len()];
        for k in (0..t.shape.len().saturating_sub(1)).rev() {
            strides[k] = strides[k + 1] * t.shape[k + 1];
        }
        ints(&mut p, &strides);
        p.extend(b"\x89ccollections\nOrderedDict\n)RtR");
    }
    p.extend(b"u.");
    p
}

/// A stored (uncompressed) zip of `members`.
pub fn zip_of(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, bytes) in members {
        w.start_file(*name, stored).unwrap();
        w.write_all(bytes).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// A `pytorch_model.bin` holding `tensors`.
pub fn torch_save(tensors: &[Saved]) -> Vec<u8> {
    let pickle = state_dict_pickle(tensors);
    let keys: Vec<String> = (0..tensors.len())
        .map(|i| format!("archive/data/{i}"))
        .collect();
    let mut members: Vec<(&str, &[u8])> = vec![("archive/data.pkl", &pickle)];
    for (key, t) in keys.iter().zip(tensors) {
        members.push((key, t.data));
    }
    members.push(("archive/version", b"3\n"));
    zip_of(&members)
}
