//! Pickle decoder. (Being written: see the pickle helper's task.)

use super::Value;
use bytes::Bytes;

/// What went wrong while decoding a pickle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pickle: at byte {pos}: {kind}")]
pub struct PickleError {
    /// Offset of the offending opcode in the input.
    pub pos: usize,
    /// What is wrong there.
    pub kind: PickleErrorKind,
}

/// The kinds of [`PickleError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PickleErrorKind {
    /// The input ended inside an opcode or before `STOP`.
    #[error("truncated")]
    Truncated,
    /// An opcode byte we do not know.
    #[error("unknown opcode {0:#04x}")]
    UnknownOpcode(u8),
    /// An opcode needed more items than the stack holds.
    #[error("stack underflow")]
    StackUnderflow,
    /// An opcode that needs a MARK found none.
    #[error("no mark")]
    NoMark,
    /// `GET` of a memo slot never `PUT`.
    #[error("memo slot {0} not set")]
    BadMemo(u64),
    /// A well-formed opcode with an argument we refuse (bad text int, bad
    /// UTF-8, negative length, protocol too new, ...).
    #[error("{0}")]
    Invalid(String),
}

/// Decodes a sequence of pickles from one buffer, with one memo shared by
/// all of them (as ZODB's `ObjectReader` does).
#[derive(Debug)]
pub struct Unpickler {
    data: Bytes,
    pos: usize,
}

impl Unpickler {
    /// An unpickler reading `data` from its start.
    pub fn new(data: Bytes) -> Self {
        Unpickler { data, pos: 0 }
    }

    /// Decode the next pickle (up to and including its `STOP`).
    pub fn load(&mut self) -> Result<Value, PickleError> {
        let _ = &self.data;
        Err(PickleError {
            pos: self.pos,
            kind: PickleErrorKind::Invalid("not implemented".into()),
        })
    }

    /// Offset of the next unread byte.
    pub fn position(&self) -> usize {
        self.pos
    }
}

/// Decode a ZODB object record: the class pickle and then the state pickle.
pub fn decode_record(data: &Bytes) -> Result<(Value, Value), PickleError> {
    let mut u = Unpickler::new(data.clone());
    let class = u.load()?;
    let state = u.load()?;
    Ok((class, state))
}
