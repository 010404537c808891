"""Finding, starting and stopping the WCFS server of a zurl.

The server is this package's own (``python -m wcfs serve``, the Rust
server linked into the extension), so nothing else needs installing. It
runs in a process of its own: its mount lives as long as that process.
"""

import os
import subprocess
import sys
import time
from typing import Optional, Sequence

from . import _wcfs

#: How long :func:`start` waits for the mount to answer.
START_TIMEOUT = 30.0


def _command(*args: str) -> list:
    return [sys.executable, "-m", "wcfs", *args]


def _default_autostart() -> bool:
    # as wendelin.core: $WENDELIN_CORE_WCFS_AUTOSTART, "yes" unless "no"
    v = os.environ.get("WENDELIN_CORE_WCFS_AUTOSTART", "yes").lower()
    if v not in ("yes", "no"):
        raise ValueError(
            "$WENDELIN_CORE_WCFS_AUTOSTART=%r: want yes or no" % v)
    return v == "yes"


def _mountpoint(zurl: str, mountpoint: Optional[str]) -> str:
    return mountpoint if mountpoint else _wcfs.default_mountpoint(zurl)


class Server:
    """A server started by :func:`start`: its process and mountpoint."""

    def __init__(self, zurl: str, mountpoint: str, proc: subprocess.Popen):
        self.zurl = zurl
        self.mountpoint = mountpoint
        self.proc = proc

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout: float = 25.0) -> None:
        """Unmount and stop the server (``wcfs stop``), then reap it."""
        try:
            stop(self.zurl, mountpoint=self.mountpoint)
        finally:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return "<wcfs.Server %s on %s pid %d>" % (
            self.zurl, self.mountpoint, self.proc.pid)


def serve(zurl: str, *optv: str, mountpoint: Optional[str] = None) -> int:
    """Run the server of `zurl` in the foreground (a child process) until
    it exits; return its exit status. `optv`: options of ``wcfs serve``
    (e.g. ``"--pintimeout", "10"``)."""
    args = list(optv) + [zurl] + ([mountpoint] if mountpoint else [])
    return subprocess.call(_command("serve", *args))


def start(zurl: str, *optv: str, mountpoint: Optional[str] = None,
          log: Optional[str] = None,
          timeout: float = START_TIMEOUT) -> Server:
    """Start the server of `zurl` in the background and wait until its
    mount answers. `log`: a file for its log (default: our stderr, which
    it then keeps open as long as it runs). Raises
    :class:`wcfs.Error` if it exits or does not answer in `timeout` s."""
    mnt = _mountpoint(zurl, mountpoint)
    pre = ["--log-file", log] if log else []
    cmd = _command(*pre, "serve", *optv, zurl, mnt)
    # the server keeps running after us: it must not hold our stdout (a
    # pipe of ours would never see EOF), nor our stderr when it has a log
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL if log else None)
    t0 = time.monotonic()
    while True:
        try:
            _wcfs.WCFS.open(mnt)
            return Server(zurl, mnt, proc)
        except _wcfs.Error:
            pass
        code = proc.poll()
        if code is not None:
            raise _wcfs.Error("wcfs: start %s on %s: the server exited "
                              "with status %d" % (zurl, mnt, code))
        if time.monotonic() - t0 > timeout:
            proc.kill()
            proc.wait()
            raise _wcfs.Error("wcfs: start %s on %s: no answer within %.0f s"
                              % (zurl, mnt, timeout))
        time.sleep(0.02)


def _tool(what: str, zurl: str, mountpoint: Optional[str]) -> str:
    args = (["--mountpoint", mountpoint] if mountpoint else []) + [zurl]
    r = subprocess.run(_command(what, *args), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise _wcfs.Error((r.stderr or r.stdout).strip() or
                          "wcfs %s %s: exit status %d" % (what, zurl, r.returncode))
    return r.stdout


def stop(zurl: str, mountpoint: Optional[str] = None) -> None:
    """Stop the server of `zurl` whatever its state (``wcfs stop``):
    unmount, stop the process, remove the mountpoint."""
    _tool("stop", zurl, mountpoint)


def status(zurl: str, mountpoint: Optional[str] = None) -> str:
    """The server's status as ``wcfs status`` prints it; raises
    :class:`wcfs.Error` if it is not running or not healthy."""
    return _tool("status", zurl, mountpoint)


def join(zurl: str, autostart: Optional[bool] = None,
         optv: Sequence[str] = ()) -> "_wcfs.WCFS":
    """The server of `zurl` on its default mountpoint; if none answers and
    `autostart` (default: ``$WENDELIN_CORE_WCFS_AUTOSTART``, yes), start
    one (with the ``wcfs serve`` options `optv`), which keeps running
    after this process."""
    try:
        return _wcfs.WCFS.from_zurl(zurl)
    except _wcfs.Error:
        if autostart is None:
            autostart = _default_autostart()
        if not autostart:
            raise
    start(zurl, *optv)
    return _wcfs.WCFS.from_zurl(zurl)
