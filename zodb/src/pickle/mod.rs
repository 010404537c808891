//! Python pickles: the decoder for ZODB records and the encoder our writer uses.
//!
//! Why our own and not `serde-pickle`: ZODB records are two pickles read with
//! one shared memo (the state may `BINGET` what the class pickle `BINPUT`),
//! references are persistent ids (`BINPERSID`) whose payload must reach the
//! caller as a value, Python 2 byte strings must stay bytes rather than be
//! decoded as text, and large `bytes` (2 MiB blocks) should be sliced out of
//! the record without a copy. `serde-pickle` decodes into its own value tree
//! through serde, has no hook for persistent ids and copies every byte string;
//! bending it to all four needs would be more code than the decoder itself.
//!
//! - [`Value`]: what a pickle decodes to.
//! - [`Unpickler`] / [`decode_record`]: decoding.
//! - [`Pickler`] / [`encode_record`]: encoding (protocols 1 to 3).
//! - [`bytes_record`], [`ref_bucket`]: fast paths for class + byte-string
//!   records (ZData, ZBlk0) and for buckets of references (chunktab, blktab).

mod decode;
mod encode;
mod fast;
#[cfg(test)]
mod tests;
mod value;

pub use decode::{decode_record, PickleError, PickleErrorKind, Unpickler};
pub use encode::{encode_record, Pickler};
pub use fast::{bytes_record, ref_bucket, BytesRecord, PRef, RefBucket};
pub use value::Value;
