//! Thin wrappers over mmap(2) and friends: the only place (with `fork.rs`)
//! that talks to the kernel about address space.
//!
//! Addresses are `usize` so that the structures holding them are `Send` and
//! `Sync`; whoever owns a range (a [`Mapping`](crate::Mapping)) is the only
//! one that may pass it to the `*_fixed` functions, and does so under the
//! owning file's `mmap_mu` (see the crate's locking section).

use crate::error::{Error, Result};
use std::os::fd::RawFd;

/// The system page size.
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

/// Map `len` bytes of `fd` at `off`, PROT_READ MAP_SHARED, at an address the
/// kernel chooses. Returns the address.
pub(crate) fn map_file(fd: RawFd, off: u64, len: usize) -> Result<usize> {
    let off = libc::off_t::try_from(off)
        .map_err(|_| Error::InvalidArg(format!("mmap offset {off} out of range")))?;
    // SAFETY: a new mapping at a kernel-chosen address (no MAP_FIXED) does
    // not alias any existing memory; it is owned by the caller from here on.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd,
            off,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(Error::sys("mmap"));
    }
    Ok(p as usize)
}

/// Replace `[addr, addr+len)` by `len` bytes of `fd` at `off`, PROT_READ
/// MAP_SHARED.
///
/// # Safety
///
/// `[addr, addr+len)` must lie inside a range the caller owns (mapped by
/// [`map_file`] and not yet unmapped), with no live Rust reference into it
/// that assumes its contents do not change.
pub(crate) unsafe fn map_file_fixed(addr: usize, len: usize, fd: RawFd, off: u64) -> Result<()> {
    let off = libc::off_t::try_from(off)
        .map_err(|_| Error::InvalidArg(format!("mmap offset {off} out of range")))?;
    // SAFETY: per this function's contract the range is ours; MAP_FIXED
    // replaces exactly those pages.
    let p = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            len,
            libc::PROT_READ,
            libc::MAP_SHARED | libc::MAP_FIXED,
            fd,
            off,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(Error::sys("mmap"));
    }
    Ok(())
}

/// Replace `[addr, addr+len)` by read-only zeros (anonymous, private,
/// no swap reservation): reads return 0, never SIGBUS.
///
/// # Safety
///
/// As for [`map_file_fixed`].
pub(crate) unsafe fn map_zero_fixed(addr: usize, len: usize) -> Result<()> {
    // SAFETY: per this function's contract the range is ours.
    unsafe { map_anon_fixed(addr, len, libc::PROT_READ) }
}

/// Replace `[addr, addr+len)` by inaccessible pages: any access faults
/// (SIGSEGV) instead of reading stale data. The range stays reserved.
///
/// Async-signal-safe (one system call, no allocation): used by the fork
/// child handler.
///
/// # Safety
///
/// As for [`map_file_fixed`].
pub(crate) unsafe fn map_none_fixed(addr: usize, len: usize) -> Result<()> {
    // SAFETY: per this function's contract the range is ours.
    unsafe { map_anon_fixed(addr, len, libc::PROT_NONE) }
}

/// # Safety
///
/// As for [`map_file_fixed`].
unsafe fn map_anon_fixed(addr: usize, len: usize, prot: libc::c_int) -> Result<()> {
    // SAFETY: per the caller's contract the range is ours; MAP_FIXED
    // replaces exactly those pages with fresh anonymous memory.
    let p = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            len,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(Error::sys("mmap"));
    }
    Ok(())
}

/// Unmap `[addr, addr+len)`.
///
/// # Safety
///
/// The caller owns the range, nothing refers into it any more, and nothing
/// will remap it after this call.
pub(crate) unsafe fn unmap(addr: usize, len: usize) {
    // SAFETY: per this function's contract the range is ours and dead.
    let r = unsafe { libc::munmap(addr as *mut libc::c_void, len) };
    if r != 0 {
        tracing::error!(addr, len, err = %std::io::Error::last_os_error(), "munmap failed");
    }
}
