//! Writing ZBigFiles into a FileStorage, or through a ZEO server: what the
//! demo, the tests, the tree generator and the stress harness use to make
//! databases.
//!
//! Each call is one transaction. Objects are written the way Python ZODB
//! writes them (protocol 3 pickles, `(oid, class)` references, a
//! `PersistentMapping` root naming the files), so that Python reads the
//! result. [`ZWriter::update_file`] rebuilds the file's blktab under the
//! same root oid with fresh interior nodes: valid ZODB data whose old nodes
//! simply become garbage, as after any BTree rewrite, but every node stored
//! on every commit. [`ZWriter::update_file_incremental`] stores what a real
//! ZODB commit stores: the changed ZBlks and the blktab nodes that change.

use crate::btree::{self, Family, Shape};
use crate::error::{Error, Result};
use crate::fs1::{FileStorage, NewData, NewTxn, Writer};
use crate::pickle::Value;
use crate::record::{self, Ref};
use crate::storage::Storage;
use crate::types::{Oid, Tid};
use crate::zbigfile::{self, NewObject, ZBigFile, ZBlkFormat, ZBIGFILE};
use crate::zeo::{ZeoSnapshot, ZeoWriter};
use std::path::Path;

/// Class path of the database root.
pub const PERSISTENT_MAPPING: &str = "persistent.mapping.PersistentMapping";

/// A block change: write `data` in `format`, or `None` to delete the block
/// (make it a hole).
pub type BlkChange<'a> = (i64, Option<(ZBlkFormat, &'a [u8])>);

/// Where a [`ZWriter`] commits: a FileStorage ([`Writer`], the default)
/// or a ZEO server ([`ZeoWriter`]).
pub trait ZBackend: std::fmt::Debug {
    /// What loads the database's current state (seeing every commit made
    /// through this backend).
    type Reader: Storage;
    /// The reading side, as of now; a writer computes its next commit from
    /// it (for ZEO the commit's conflict check is against this state).
    fn reader(&self) -> Self::Reader;
    /// The latest committed tid.
    fn head(&self) -> Tid;
    /// Allocate a new oid.
    fn alloc_oid(&mut self) -> Oid;
    /// Commit one transaction; its tid.
    fn commit_txn(&mut self, txn: NewTxn) -> Result<Tid>;
}

impl ZBackend for Writer {
    type Reader = FileStorage;
    fn reader(&self) -> FileStorage {
        self.storage()
    }
    fn head(&self) -> Tid {
        self.last_tid()
    }
    fn alloc_oid(&mut self) -> Oid {
        self.new_oid()
    }
    fn commit_txn(&mut self, txn: NewTxn) -> Result<Tid> {
        self.commit(txn)
    }
}

impl ZBackend for ZeoWriter {
    type Reader = ZeoSnapshot;
    fn reader(&self) -> ZeoSnapshot {
        self.snapshot()
    }
    fn head(&self) -> Tid {
        self.last_tid()
    }
    fn alloc_oid(&mut self) -> Oid {
        self.new_oid()
    }
    fn commit_txn(&mut self, txn: NewTxn) -> Result<Tid> {
        self.commit(txn)
    }
}

/// A writer that knows ZBigFiles: to a FileStorage (`ZWriter`, as
/// [`ZWriter::open`] makes it) or through a ZEO server
/// (`ZWriter<ZeoWriter>`, [`ZWriter::open_zeo`]).
#[derive(Debug)]
pub struct ZWriter<B: ZBackend = Writer> {
    w: B,
    /// Shape of the blktab trees written from now on.
    pub blktab_shape: Shape,
}

impl ZWriter {
    /// Open (creating if needed) the database at `path` for writing, and
    /// make sure it has a root object.
    pub fn open(path: impl AsRef<Path>) -> Result<ZWriter> {
        let w = Writer::open(path.as_ref(), true)?;
        Self::with_root(w)
    }

    /// The underlying FileStorage writer.
    pub fn writer(&mut self) -> &mut Writer {
        &mut self.w
    }
}

impl ZWriter<ZeoWriter> {
    /// Connect to storage `storage` of the ZEO server at `addr` for writing
    /// (see [`ZeoWriter`]), and make sure the database has a root object.
    pub fn open_zeo(addr: &str, storage: &str) -> Result<ZWriter<ZeoWriter>> {
        let w = ZeoWriter::open(addr, storage)?;
        Self::with_root(w)
    }
}

impl<B: ZBackend> ZWriter<B> {
    /// A writer on backend `w` (e.g. one that is FileStorage or ZEO as a
    /// test chooses), with a root object committed if the database has
    /// none.
    pub fn from_backend(w: B) -> Result<ZWriter<B>> {
        Self::with_root(w)
    }

    /// `w` with a root object committed if the database has none.
    fn with_root(mut w: B) -> Result<ZWriter<B>> {
        if let Err(e) = w.reader().load(Oid(0), Tid::MAX) {
            if !e.is_no_object() {
                return Err(e);
            }
            let root = Value::Dict(vec![(Value::Unicode("data".into()), Value::Dict(vec![]))]);
            w.commit_txn(NewTxn {
                description: b"initial database creation".to_vec(),
                records: vec![(
                    Oid(0),
                    NewData::Data(record::encode(PERSISTENT_MAPPING, &root)),
                )],
                ..NewTxn::default()
            })?;
        }
        Ok(ZWriter {
            w,
            blktab_shape: Shape::default(),
        })
    }

    /// The backend.
    pub fn backend(&mut self) -> &mut B {
        &mut self.w
    }

    /// What loads the current state (sees every commit made through this
    /// writer).
    pub fn reader(&self) -> B::Reader {
        self.w.reader()
    }

    /// The latest committed tid.
    pub fn head(&self) -> Tid {
        self.w.head()
    }

    /// Store `objs` in one transaction described by `desc`.
    pub fn commit_objects(&mut self, desc: &str, objs: Vec<NewObject>) -> Result<Tid> {
        let records = objs
            .into_iter()
            .map(|o| (o.oid, NewData::Data(record::encode(o.class, &o.state))))
            .collect();
        self.w.commit_txn(NewTxn {
            description: desc.as_bytes().to_vec(),
            records,
            ..NewTxn::default()
        })
    }

    /// Create a ZBigFile named `name` in the root, holding `blocks`, in one
    /// transaction. Returns its oid and the transaction's tid.
    pub fn create_file(
        &mut self,
        name: &str,
        blksize: u64,
        blocks: &[BlkChange<'_>],
    ) -> Result<(Oid, Tid)> {
        let oid = self.w.alloc_oid();
        let blktab = self.w.alloc_oid();
        let mut objs = vec![NewObject {
            oid,
            class: ZBIGFILE,
            state: zbigfile::zbigfile_state(blksize, blktab),
        }];
        let mut items = Vec::new();
        let mut sorted: Vec<&BlkChange<'_>> = blocks.iter().collect();
        sorted.sort_by_key(|c| c.0);
        for (blk, change) in sorted {
            let Some((format, data)) = change else {
                continue;
            };
            check_blk(oid, *blk, blksize, data)?;
            let zoid = self.w.alloc_oid();
            objs.extend(zbigfile::zblk_objects(zoid, *format, data, &mut || {
                self.w.alloc_oid()
            }));
            items.push((*blk, zbigfile::zblk_ref(zoid, *format).to_value()));
        }
        objs.extend(btree::build(
            Family::LO,
            &items,
            self.blktab_shape,
            blktab,
            &mut || self.w.alloc_oid(),
        ));
        objs.push(self.root_with(name, Some(oid))?);
        let tid = self.commit_objects(&format!("create {name}"), objs)?;
        Ok((oid, tid))
    }

    /// Allocate a new oid.
    pub fn new_oid(&mut self) -> Oid {
        self.w.alloc_oid()
    }

    /// Apply block changes to ZBigFile `oid` in one transaction. A block
    /// whose ZBlk has the requested format keeps its ZBlk oid (the ZBlk is
    /// rewritten); otherwise a new ZBlk is made, as wendelin.core does.
    /// The whole blktab is rebuilt (see the module doc); for what a real
    /// commit stores, see [`ZWriter::update_file_incremental`].
    pub fn update_file(&mut self, oid: Oid, changes: &[BlkChange<'_>]) -> Result<Tid> {
        let stor = &self.w.reader();
        let head = stor.last_tid()?;
        let f = ZBigFile::load(stor, oid, head)?;
        let mut items: std::collections::BTreeMap<i64, Ref> =
            btree::items(stor, Family::LO, f.blktab, head)?
                .iter()
                .map(|(k, v)| Ok((*k, record::decode_ref(f.blktab, v)?)))
                .collect::<Result<_>>()?;
        let mut objs = Vec::new();
        for (blk, change) in changes {
            match change {
                None => {
                    items.remove(blk);
                }
                Some((format, data)) => {
                    check_blk(oid, *blk, f.blksize, data)?;
                    let r = self.store_zblk(items.get(blk), *format, data, &mut objs);
                    items.insert(*blk, r);
                }
            }
        }
        let items: Vec<(i64, Value)> = items.into_iter().map(|(k, r)| (k, r.to_value())).collect();
        objs.extend(btree::build(
            Family::LO,
            &items,
            self.blktab_shape,
            f.blktab,
            &mut || self.w.alloc_oid(),
        ));
        self.commit_objects(&format!("update {oid}"), objs)
    }

    /// [`ZWriter::update_file`] storing what wendelin.core and ZODB would
    /// store for these changes: the ZBlks written, and of the blktab only
    /// the nodes that change ([`btree::update`]: the buckets whose items
    /// change, their parents only when a bucket splits or goes away, the
    /// tree's oid kept). A block rewritten in its ZBlk's format changes
    /// its ZBlk alone: the blktab still references the same object, as in
    /// `ZBigFile.storeblk`. Changes apply in order (the last one of a
    /// block wins); `blktab_shape` gives the split sizes.
    pub fn update_file_incremental(&mut self, oid: Oid, changes: &[BlkChange<'_>]) -> Result<Tid> {
        let stor = &self.w.reader();
        let head = stor.last_tid()?;
        let f = ZBigFile::load(stor, oid, head)?;
        let mut last: std::collections::BTreeMap<i64, &Option<(ZBlkFormat, &[u8])>> =
            std::collections::BTreeMap::new();
        for (blk, change) in changes {
            last.insert(*blk, change);
        }
        let mut objs = Vec::new();
        let mut items = Vec::new(); // (blk, new value) for the blktab
        for (blk, change) in last {
            let cur = btree::lookup(stor, Family::LO, f.blktab, blk, head)?
                .value
                .map(|v| record::decode_ref(f.blktab, &v))
                .transpose()?;
            match change {
                None => items.push((blk, None)),
                Some((format, data)) => {
                    check_blk(oid, blk, f.blksize, data)?;
                    let r = self.store_zblk(cur.as_ref(), *format, data, &mut objs);
                    // the same object: the blktab does not change
                    if cur.as_ref().map(|c| c.oid) != Some(r.oid) {
                        items.push((blk, Some(r.to_value())));
                    }
                }
            }
        }
        objs.extend(btree::update(
            stor,
            Family::LO,
            f.blktab,
            head,
            &items,
            self.blktab_shape,
            &mut || self.w.alloc_oid(),
        )?);
        self.commit_objects(&format!("update {oid}"), objs)
    }

    /// Append to `objs` the objects of a ZBlk holding `data` in `format`,
    /// for a block whose blktab entry is `cur`: the same ZBlk object when
    /// it has that format (a reference without a class counts as ZBlk0,
    /// the older form), else a new one. The reference the blktab is to
    /// hold.
    fn store_zblk(
        &mut self,
        cur: Option<&Ref>,
        format: ZBlkFormat,
        data: &[u8],
        objs: &mut Vec<NewObject>,
    ) -> Ref {
        let want = zbigfile::zblk_ref(Oid(0), format).class;
        let zoid = match cur {
            Some(r) if r.class == want || (r.class.is_none() && format != ZBlkFormat::ZBlk1) => {
                r.oid
            }
            _ => self.w.alloc_oid(),
        };
        objs.extend(zbigfile::zblk_objects(zoid, format, data, &mut || {
            self.w.alloc_oid()
        }));
        zbigfile::zblk_ref(zoid, format)
    }

    /// Remove file `name` from the root and delete the ZBigFile object
    /// (a deletion record), in one transaction.
    pub fn delete_file(&mut self, name: &str, oid: Oid) -> Result<Tid> {
        let root = self.root_with(name, None)?;
        self.w.commit_txn(NewTxn {
            description: format!("delete {name}").into_bytes(),
            records: vec![
                (
                    Oid(0),
                    NewData::Data(record::encode(root.class, &root.state)),
                ),
                (oid, NewData::Delete),
            ],
            ..NewTxn::default()
        })
    }

    /// The root object with `name` bound to `file` (or unbound if `None`).
    fn root_with(&mut self, name: &str, file: Option<Oid>) -> Result<NewObject> {
        self.root_with_entry(name, file.map(|f| Ref::new(f, ZBIGFILE).to_value()))
    }

    /// The root object (a `PersistentMapping`) as of now with `name` bound
    /// to `value`, or unbound if `None`; to be stored with other objects.
    pub fn root_with_entry(&mut self, name: &str, value: Option<Value>) -> Result<NewObject> {
        self.root_with_entries(vec![(name, value)])
    }

    /// Like [`ZWriter::root_with_entry`] for several entries at once.
    pub fn root_with_entries(&mut self, set: Vec<(&str, Option<Value>)>) -> Result<NewObject> {
        let stor = &self.w.reader();
        let root = record::load(stor, Oid(0), stor.last_tid()?)?;
        let bad = || Error::bad_state(Oid(0), "root is not a PersistentMapping {'data': {...}}");
        let Value::Dict(mut top) = root.state else {
            return Err(bad());
        };
        let data = top
            .iter_mut()
            .find(|(k, _)| k.as_bytes().is_some_and(|k| &k[..] == b"data"))
            .ok_or_else(bad)?;
        let Value::Dict(entries) = &mut data.1 else {
            return Err(bad());
        };
        for (name, value) in set {
            entries.retain(|(k, _)| k.as_bytes().is_none_or(|k| &k[..] != name.as_bytes()));
            if let Some(v) = value {
                entries.push((Value::Unicode(name.into()), v));
            }
        }
        Ok(NewObject {
            oid: Oid(0),
            class: PERSISTENT_MAPPING,
            state: Value::Dict(top),
        })
    }
}

fn check_blk(oid: Oid, blk: i64, blksize: u64, data: &[u8]) -> Result<()> {
    if blk < 0 || data.len() as u64 > blksize {
        return Err(Error::bad_state(
            oid,
            format!(
                "cannot write blk #{blk} of {} bytes (blksize {blksize})",
                data.len()
            ),
        ));
    }
    Ok(())
}
