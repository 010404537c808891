//! The value tree a pickle decodes to.

use bytes::Bytes;

/// A decoded pickle value.
///
/// Python objects that ZODB data holds map onto this closed set; anything
/// built by calling a class (`REDUCE`, `NEWOBJ`, `BUILD`) is kept as a
/// description of the call so that callers can recognise or reject it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An int that fits in i64.
    Int(i64),
    /// An int that does not fit in i64: little-endian two's complement
    /// bytes, as `LONG1`/`LONG4` carry them (never empty).
    BigInt(Vec<u8>),
    /// A float.
    Float(f64),
    /// Python 2 `str` (`STRING`, `BINSTRING`, `SHORT_BINSTRING`): raw bytes.
    Str8(Bytes),
    /// Python 3 `bytes` or zodbpickle `binary` (`BINBYTES`, `SHORT_BINBYTES`, ...).
    Bytes(Bytes),
    /// Text (`UNICODE`, `BINUNICODE`, `SHORT_BINUNICODE`, ...).
    Unicode(String),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A list.
    List(Vec<Value>),
    /// A dict, as key/value pairs in insertion order.
    Dict(Vec<(Value, Value)>),
    /// A reference to a class or function: `GLOBAL module name`.
    Global {
        /// Module path, e.g. `BTrees.LOBTree`.
        module: String,
        /// Name inside the module, e.g. `LOBTree`.
        name: String,
    },
    /// A persistent reference (`BINPERSID`/`PERSID`): the id object as pickled.
    PersId(Box<Value>),
    /// `callable(*args)` (`REDUCE`), kept undecoded.
    Reduce {
        /// What is called.
        callable: Box<Value>,
        /// The argument tuple.
        args: Box<Value>,
    },
    /// `cls.__new__(cls, *args)` (`NEWOBJ`), kept undecoded.
    NewObj {
        /// The class.
        cls: Box<Value>,
        /// The argument tuple.
        args: Box<Value>,
    },
    /// `obj.__setstate__(state)` (`BUILD`), kept undecoded.
    Build {
        /// The object being built.
        obj: Box<Value>,
        /// Its state.
        state: Box<Value>,
    },
}

impl Value {
    /// The bytes of a byte string: Python 2 `str`, `bytes`, or text that is
    /// pure ASCII/Latin-1 as Python 3 ZODB may present a Py2 string
    /// (`Unicode` is accepted only if every char is < 256). Go WCFS's `AsBytes`.
    pub fn as_bytes(&self) -> Option<Bytes> {
        match self {
            Value::Str8(b) | Value::Bytes(b) => Some(b.clone()),
            Value::Unicode(s) => s
                .chars()
                .map(|c| u8::try_from(u32::from(c)).ok())
                .collect::<Option<Vec<u8>>>()
                .map(Bytes::from),
            _ => None,
        }
    }

    /// The integer, if this is an int that fits in i64 (a bool counts, as in Python).
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::Int(i) => Some(i),
            Value::Bool(b) => Some(b as i64),
            _ => None,
        }
    }

    /// The items of a tuple.
    pub fn as_tuple(&self) -> Option<&[Value]> {
        match self {
            Value::Tuple(t) => Some(t),
            _ => None,
        }
    }

    /// `module.name` of a `GLOBAL`.
    pub fn as_global(&self) -> Option<(&str, &str)> {
        match self {
            Value::Global { module, name } => Some((module, name)),
            _ => None,
        }
    }

    /// True for `None`.
    pub fn is_none(&self) -> bool {
        matches!(self, Value::None)
    }

    /// A short name of the value's kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::BigInt(_) => "int",
            Value::Float(_) => "float",
            Value::Str8(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Unicode(_) => "unicode",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global { .. } => "global",
            Value::PersId(_) => "persistent-ref",
            Value::Reduce { .. } => "reduce",
            Value::NewObj { .. } => "newobj",
            Value::Build { .. } => "build",
        }
    }
}
