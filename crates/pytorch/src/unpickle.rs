//! The restricted unpickler: runs the opcodes `torch.save` emits for a state dict
//! (protocols 2–4: containers, strings, ints, memo, `BINPERSID` for storages, `REDUCE` /
//! `BUILD`) and knows exactly these globals: `collections.OrderedDict`,
//! `torch._utils._rebuild_tensor_v2`, `torch._utils._rebuild_parameter` and the typed storage
//! classes (`torch.HalfStorage`, …). Any other global (`os.system`, `builtins.eval`, …) or
//! opcode is refused with an error naming it; nothing is ever called or imported. The result
//! is a list of tensor views (storage key, offset, shape, strides), not their bytes.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use anyhow::{bail, ensure, Context, Result};
use safetensors::Dtype as StDtype;

/// Most dimensions a tensor may have (PyTorch's own limit).
const MAX_RANK: usize = 64;

/// A storage named by `BINPERSID`: its element type, zip key and element count.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StorageRef {
    pub(crate) dtype: StDtype,
    pub(crate) key: String,
    pub(crate) numel: usize,
}

/// A tensor rebuilt by `_rebuild_tensor_v2`: a view of a storage.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TensorRef {
    pub(crate) storage: StorageRef,
    /// In elements.
    pub(crate) offset: usize,
    pub(crate) shape: Vec<usize>,
    pub(crate) stride: Vec<usize>,
}

/// The globals a state dict's pickle may name.
#[derive(Debug, Clone, PartialEq)]
enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildParameter,
    Storage(StDtype),
}

impl Global {
    fn resolve(module: &str, name: &str) -> Result<Global> {
        Ok(match (module, name) {
            ("collections", "OrderedDict") => Global::OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
            ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
            ("torch", storage) => Global::Storage(match storage {
                "HalfStorage" => StDtype::F16,
                "BFloat16Storage" => StDtype::BF16,
                "FloatStorage" => StDtype::F32,
                "DoubleStorage" => StDtype::F64,
                "LongStorage" => StDtype::I64,
                "IntStorage" => StDtype::I32,
                "ShortStorage" => StDtype::I16,
                "CharStorage" => StDtype::I8,
                "ByteStorage" => StDtype::U8,
                "BoolStorage" => StDtype::BOOL,
                _ => bail!("the pickle asks for torch.{storage}, which a state dict never needs"),
            }),
            _ => bail!(
                "the pickle asks for {module}.{name}, which a state dict never needs: refused \
                 (nothing was executed)"
            ),
        })
    }
}

/// A value on the unpickler's stack.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// Strings and tuples are shared, so fetching one from the memo again costs nothing
    /// (a pickle of repeated `BINGET`s cannot multiply memory).
    Str(Rc<str>),
    Tuple(Rc<Vec<Value>>),
    /// Lists and dicts are shared, as in Python: the memo and the stack see one object.
    List(Rc<RefCell<Vec<Value>>>),
    Dict(Rc<RefCell<Vec<(Value, Value)>>>),
    Global(Global),
    Storage(StorageRef),
    Tensor(TensorRef),
    /// Where a `MARK` was pushed.
    Mark,
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global(_) => "global",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
            Value::Mark => "mark",
        }
    }

    fn usize(&self, what: &str) -> Result<usize> {
        match self {
            Value::Int(i) if *i >= 0 => Ok(*i as usize),
            v => bail!("{what}: expected a non-negative int, found {}", v.kind()),
        }
    }

    /// A shape or strides: at most [`MAX_RANK`] non-negative ints.
    fn usizes(&self, what: &str) -> Result<Vec<usize>> {
        let len = match self {
            Value::Tuple(items) => items.len(),
            Value::List(items) => items.borrow().len(),
            _ => 0,
        };
        ensure!(
            len <= MAX_RANK,
            "{what}: {len} dimensions (at most {MAX_RANK})"
        );
        match self {
            Value::Tuple(items) => items.iter().map(|v| v.usize(what)).collect(),
            Value::List(items) => items.borrow().iter().map(|v| v.usize(what)).collect(),
            v => bail!("{what}: expected a tuple of ints, found {}", v.kind()),
        }
    }
}

/// The pickle machine: a stack, the marks, the memo, and the input with a cursor.
struct Machine<'a> {
    input: &'a [u8],
    at: usize,
    stack: Vec<Value>,
    memo: HashMap<u32, Value>,
}

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.input.len())
            .with_context(|| format!("truncated at byte {} (wanted {n} more)", self.at))?;
        let bytes = &self.input[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn line(&mut self) -> Result<&'a str> {
        let rest = &self.input[self.at..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .context("GLOBAL without an end of line")?;
        let line = std::str::from_utf8(&rest[..n]).context("GLOBAL name is not UTF-8")?;
        self.at += n + 1;
        Ok(line)
    }

    fn string(&mut self, n: usize) -> Result<Value> {
        let bytes = self.take(n)?;
        Ok(Value::Str(
            std::str::from_utf8(bytes)
                .context("a string is not UTF-8")?
                .into(),
        ))
    }

    fn pop(&mut self) -> Result<Value> {
        match self.stack.pop() {
            Some(Value::Mark) | None => bail!("stack underflow at byte {}", self.at),
            Some(v) => Ok(v),
        }
    }

    /// Everything above the topmost mark (the mark removed).
    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let mark = self
            .stack
            .iter()
            .rposition(|v| *v == Value::Mark)
            .with_context(|| format!("no MARK for the opcode before byte {}", self.at))?;
        let items = self.stack.split_off(mark + 1);
        self.stack.pop();
        Ok(items)
    }

    fn top(&mut self) -> Result<&mut Value> {
        match self.stack.last_mut() {
            Some(Value::Mark) | None => bail!("stack underflow at byte {}", self.at),
            Some(v) => Ok(v),
        }
    }

    fn memo_put(&mut self, key: u32) -> Result<()> {
        let v = self.top()?.clone();
        self.memo.insert(key, v);
        Ok(())
    }

    fn memo_get(&mut self, key: u32) -> Result<()> {
        let v = self
            .memo
            .get(&key)
            .with_context(|| format!("memo key {key} was never stored"))?
            .clone();
        self.stack.push(v);
        Ok(())
    }

    fn set_items(&mut self, items: Vec<Value>) -> Result<()> {
        ensure!(items.len() % 2 == 0, "SETITEMS with an odd number of items");
        let Value::Dict(dict) = self.top()? else {
            bail!("SETITEM(S) on something that is not a dict");
        };
        let mut dict = dict.borrow_mut();
        let mut items = items.into_iter();
        while let (Some(k), Some(v)) = (items.next(), items.next()) {
            dict.push((k, v));
        }
        Ok(())
    }

    fn reduce(&mut self) -> Result<()> {
        let args = match self.pop()? {
            Value::Tuple(args) => args,
            v => bail!("REDUCE arguments must be a tuple, found {}", v.kind()),
        };
        let Value::Global(callable) = self.pop()? else {
            bail!("REDUCE of something that is not an allowed global");
        };
        let value = match callable {
            Global::OrderedDict => {
                ensure!(args.is_empty(), "OrderedDict called with arguments");
                Value::Dict(Rc::default())
            }
            Global::RebuildTensorV2 => {
                ensure!(
                    (4..=7).contains(&args.len()),
                    "_rebuild_tensor_v2 with {} arguments",
                    args.len()
                );
                let Value::Storage(storage) = &args[0] else {
                    bail!(
                        "_rebuild_tensor_v2 of a {} (expected a storage)",
                        args[0].kind()
                    );
                };
                Value::Tensor(TensorRef {
                    storage: storage.clone(),
                    offset: args[1].usize("storage offset")?,
                    shape: args[2].usizes("tensor shape")?,
                    stride: args[3].usizes("tensor strides")?,
                })
            }
            Global::RebuildParameter => match args.first() {
                Some(Value::Tensor(t)) => Value::Tensor(t.clone()),
                _ => bail!("_rebuild_parameter of something that is not a tensor"),
            },
            Global::Storage(_) => bail!("a storage class called directly"),
        };
        self.stack.push(value);
        Ok(())
    }

    fn persistent_load(&mut self) -> Result<()> {
        let pid = match self.pop()? {
            Value::Tuple(pid) => pid,
            v => bail!("persistent id must be a tuple, found {}", v.kind()),
        };
        let storage = match pid.as_slice() {
            [Value::Str(tag), Value::Global(Global::Storage(dtype)), Value::Str(key), Value::Str(_location), numel]
                if &**tag == "storage" =>
            {
                ensure!(
                    !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                    "storage key {key:?} is not a plain name"
                );
                StorageRef {
                    dtype: *dtype,
                    key: key.to_string(),
                    numel: numel.usize("storage size")?,
                }
            }
            _ => bail!("persistent id is not ('storage', <storage type>, key, location, size)"),
        };
        self.stack.push(Value::Storage(storage));
        Ok(())
    }

    /// Runs to `STOP`; returns the value left on the stack.
    fn run(&mut self) -> Result<Value> {
        loop {
            let at = self.at;
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    ensure!(proto <= 5, "pickle protocol {proto}");
                }
                0x95 => {
                    self.take(8)?; // FRAME: a length hint
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.stack
                        .push(Value::Global(Global::resolve(module, name)?));
                }
                0x93 => {
                    let (name, module) = (self.pop()?, self.pop()?);
                    let (Value::Str(module), Value::Str(name)) = (module, name) else {
                        bail!("STACK_GLOBAL of non-strings");
                    };
                    self.stack
                        .push(Value::Global(Global::resolve(&module, &name)?));
                }
                b'}' => self.stack.push(Value::Dict(Rc::default())),
                b')' => self.stack.push(Value::Tuple(Rc::default())),
                b']' => self.stack.push(Value::List(Rc::default())),
                b'(' => self.stack.push(Value::Mark),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(Rc::new(items)));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = (0..n).map(|_| self.pop()).collect::<Result<Vec<_>>>()?;
                    items.reverse();
                    self.stack.push(Value::Tuple(Rc::new(items)));
                }
                b'q' => {
                    let k = self.u8()? as u32;
                    self.memo_put(k)?;
                }
                b'r' => {
                    let k = self.u32()?;
                    self.memo_put(k)?;
                }
                0x94 => {
                    let k = self.memo.len() as u32;
                    self.memo_put(k)?;
                }
                b'h' => {
                    let k = self.u8()? as u32;
                    self.memo_get(k)?;
                }
                b'j' => {
                    let k = self.u32()?;
                    self.memo_get(k)?;
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let s = self.string(n)?;
                    self.stack.push(s);
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let s = self.string(n)?;
                    self.stack.push(s);
                }
                b'J' => {
                    let v = i32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes"));
                    self.stack.push(Value::Int(v as i64));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v as i64));
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes"));
                    self.stack.push(Value::Int(v as i64));
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    ensure!(n <= 8, "LONG1 of {n} bytes (ints beyond 64 bits)");
                    let bytes = self.take(n)?;
                    let mut buf = if bytes.last().is_some_and(|b| b & 0x80 != 0) {
                        [0xff; 8]
                    } else {
                        [0; 8]
                    };
                    buf[..n].copy_from_slice(bytes);
                    self.stack.push(Value::Int(i64::from_le_bytes(buf)));
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes"));
                    self.stack.push(Value::Float(v));
                }
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'N' => self.stack.push(Value::None),
                b'R' => self.reduce()?,
                b'b' => {
                    // BUILD: the state of an OrderedDict (`_metadata`) or a tensor's extra
                    // attributes; neither carries weights, so it is dropped.
                    let _state = self.pop()?;
                    let target = self.top()?;
                    ensure!(
                        matches!(target, Value::Dict(_) | Value::Tensor(_)),
                        "BUILD on a {}",
                        target.kind()
                    );
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?;
                }
                b'a' => {
                    let v = self.pop()?;
                    let Value::List(list) = self.top()? else {
                        bail!("APPEND to something that is not a list");
                    };
                    list.borrow_mut().push(v);
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    let Value::List(list) = self.top()? else {
                        bail!("APPENDS to something that is not a list");
                    };
                    list.borrow_mut().extend(items);
                }
                b'Q' => self.persistent_load()?,
                b'.' => {
                    let v = self.pop()?;
                    return Ok(v);
                }
                _ => bail!(
                    "pickle opcode {op:#04x} at byte {at} is not one torch.save writes for a \
                     state dict: refused"
                ),
            }
        }
    }
}

/// The `{name: tensor}` state dict of a `data.pkl`.
pub(crate) fn unpickle_state_dict(pickle: &[u8]) -> Result<Vec<(String, TensorRef)>> {
    let mut m = Machine {
        input: pickle,
        at: 0,
        stack: Vec::new(),
        memo: HashMap::new(),
    };
    let Value::Dict(items) = m.run()? else {
        bail!("the pickle holds no dict of tensors (not a state dict)");
    };
    let items = items.borrow();
    let mut out = Vec::with_capacity(items.len());
    for (k, v) in items.iter().cloned() {
        match (k, v) {
            (Value::Str(name), Value::Tensor(t)) => out.push((name.to_string(), t)),
            (Value::Str(name), v) => bail!("state dict entry {name:?} is a {}", v.kind()),
            (k, _) => bail!("state dict key is a {}, expected a string", k.kind()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::gather;

    /// Pickle bytes for `{"w": _rebuild_tensor_v2(storage('0', HalfStorage, numel 6), off,
    /// shape, stride, False, OrderedDict())}` as torch.save (protocol 2) writes them.
    fn state_dict_pickle(offset: u8, shape: &[u8], stride: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 2];
        p.extend(b"ccollections\nOrderedDict\nq\x00)Rq\x01(X\x01\x00\x00\x00wq\x02");
        p.extend(b"ctorch._utils\n_rebuild_tensor_v2\nq\x03((X\x07\x00\x00\x00storageq\x04");
        p.extend(b"ctorch\nHalfStorage\nq\x05X\x01\x00\x00\x000q\x06X\x03\x00\x00\x00cpuq\x07K\x06tq\x08Q");
        p.extend([b'K', offset, b'(']);
        for &d in shape {
            p.extend([b'K', d]);
        }
        p.extend(b"tq\x09(");
        for &s in stride {
            p.extend([b'K', s]);
        }
        p.extend(b"tq\x0a\x89ccollections\nOrderedDict\nq\x0b)Rq\x0ctq\x0dRq\x0eu}q\x0fbh\x01");
        p.extend(b".");
        p
    }

    #[test]
    fn a_state_dict_pickle_gives_its_tensor_views() {
        let refs = unpickle_state_dict(&state_dict_pickle(0, &[2, 3], &[3, 1])).unwrap();
        assert_eq!(refs.len(), 1);
        let (name, t) = &refs[0];
        assert_eq!(name, "w");
        assert_eq!(
            (t.storage.dtype, t.storage.key.as_str()),
            (StDtype::F16, "0")
        );
        assert_eq!(
            (t.shape.clone(), t.stride.clone(), t.offset),
            (vec![2, 3], vec![3, 1], 0)
        );
    }

    #[test]
    fn views_are_gathered_in_row_major_order_and_bounds_checked() {
        let storage: Vec<u8> = (0..6u16).flat_map(|v| v.to_le_bytes()).collect();
        let elems = |b: &[u8]| -> Vec<u16> {
            b.chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect()
        };
        let view = |offset, shape: &[u8], stride: &[u8]| {
            let refs = unpickle_state_dict(&state_dict_pickle(offset, shape, stride)).unwrap();
            refs[0].1.clone()
        };
        // Contiguous, transposed (a non-contiguous view), and offset.
        assert_eq!(
            elems(&gather("w", &view(0, &[2, 3], &[3, 1]), &storage).unwrap()),
            [0, 1, 2, 3, 4, 5]
        );
        assert_eq!(
            elems(&gather("w", &view(0, &[3, 2], &[1, 3]), &storage).unwrap()),
            [0, 3, 1, 4, 2, 5]
        );
        assert_eq!(
            elems(&gather("w", &view(2, &[2, 2], &[2, 1]), &storage).unwrap()),
            [2, 3, 4, 5]
        );
        // Past the end of the storage, and a storage of the wrong size.
        let err = gather("w", &view(3, &[2, 2], &[2, 1]), &storage)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("reaches past its storage of 6 elements"),
            "{err}"
        );
        let err = gather("w", &view(0, &[2, 3], &[3, 1]), &storage[..10])
            .unwrap_err()
            .to_string();
        assert!(err.contains("storage 0 has 10 bytes"), "{err}");
        // A view with more elements than its storage (stride 0, as `expand` makes) is not
        // materialized: safetensors cannot alias, and its size would come from the file.
        let err = gather("w", &view(0, &[200, 3], &[0, 1]), &storage)
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than its storage's 6"), "{err}");
    }

    #[test]
    fn anything_but_a_state_dict_is_refused() {
        // pickle.dumps(os.system) in protocol 2 (no call), and a call of it (REDUCE).
        let err = unpickle_state_dict(b"\x80\x02cposix\nsystem\nq\x00.").unwrap_err();
        assert!(err.to_string().contains("posix.system"), "{err}");
        let err = unpickle_state_dict(b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00ls\x85R.")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("os.system") && err.contains("nothing was executed"),
            "{err}"
        );
        let err = unpickle_state_dict(b"\x80\x02cbuiltins\neval\n.")
            .unwrap_err()
            .to_string();
        assert!(err.contains("builtins.eval"), "{err}");
        // An opcode a state dict never uses (INST), truncation, and not a dict at all.
        let err = unpickle_state_dict(b"\x80\x02ios\nsystem\n.")
            .unwrap_err()
            .to_string();
        assert!(err.contains("opcode 0x69"), "{err}");
        let full = state_dict_pickle(0, &[2, 3], &[3, 1]);
        for cut in [1, 10, full.len() / 2, full.len() - 1] {
            assert!(unpickle_state_dict(&full[..cut]).is_err(), "cut at {cut}");
        }
        let err = unpickle_state_dict(b"\x80\x02K\x05.")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a state dict"), "{err}");
    }
}
