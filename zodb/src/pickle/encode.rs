//! Pickle encoder. (Being written: see the pickle helper's task.)

use super::Value;

/// Encodes values as pickles of a given protocol (1, 2 or 3).
#[derive(Debug)]
pub struct Pickler {
    out: Vec<u8>,
    protocol: u8,
}

impl Pickler {
    /// A pickler writing protocol `protocol` (clamped to 1..=3).
    pub fn new(protocol: u8) -> Self {
        Pickler {
            out: Vec::new(),
            protocol: protocol.clamp(1, 3),
        }
    }

    /// Append one complete pickle of `v` (with `PROTO` for protocol >= 2, and `STOP`).
    pub fn dump(&mut self, v: &Value) {
        let _ = (v, self.protocol);
        unimplemented!()
    }

    /// The bytes written so far.
    pub fn finish(self) -> Vec<u8> {
        self.out
    }
}

/// Encode a ZODB object record: class pickle, then state pickle.
pub fn encode_record(class: &Value, state: &Value, protocol: u8) -> Vec<u8> {
    let mut p = Pickler::new(protocol);
    p.dump(class);
    p.dump(state);
    p.finish()
}
