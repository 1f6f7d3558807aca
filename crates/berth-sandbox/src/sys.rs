//! The small syscall layer: every `unsafe` block of the sandbox lives here.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::unistd::Pid;

/// `clone(2)` with fork semantics (no new stack): returns `None` in the child
/// and the child's PID in the parent. `flags` are `CLONE_NEW*` flags;
/// `SIGCHLD` is added so the parent can wait for the child normally.
///
/// The caller must be single-threaded (berth never clones from a
/// multi-threaded process): the child gets a copy of only the calling thread.
pub fn clone_fork(flags: libc::c_int) -> io::Result<Option<Pid>> {
    let flags = (flags | libc::SIGCHLD) as libc::c_ulong;
    // SAFETY: a raw clone without CLONE_VM and with a NULL stack behaves like
    // fork(2): the child runs on a copy-on-write copy of our address space and
    // stack, so no Rust invariant is broken. The other pointer arguments are
    // NULL, which clone accepts when the matching flags are absent.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_int>(),
            std::ptr::null_mut::<libc::c_int>(),
            0usize,
        )
    };
    match ret {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        pid => Ok(Some(Pid::from_raw(pid as libc::pid_t))),
    }
}

/// Makes `fd` the controlling terminal of the calling session.
pub fn set_controlling_tty(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal); `fd` is a
    // valid open descriptor for the duration of the call.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0) };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Window size of a terminal, as `TIOCGWINSZ` reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WinSize {
    pub rows: u16,
    pub cols: u16,
}

/// Reads the window size of the terminal `fd`; `None` when it is no terminal.
pub fn get_winsize(fd: BorrowedFd<'_>) -> Option<WinSize> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `struct winsize` to the pointer, which
    // points to a live, properly aligned local.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (ret == 0).then_some(WinSize {
        rows: ws.ws_row,
        cols: ws.ws_col,
    })
}

/// Sets the window size of the terminal `fd`.
pub fn set_winsize(fd: BorrowedFd<'_>, size: WinSize) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `struct winsize` from the pointer, which
    // points to a live local.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Takes ownership of a raw descriptor received from the kernel.
pub fn own_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: callers pass descriptors that were just handed to us by the
    // kernel (SCM_RIGHTS) and are owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Borrows one of the standard descriptors (0, 1, 2), which stay open for
/// the life of the process.
pub fn std_fd(fd: RawFd) -> BorrowedFd<'static> {
    debug_assert!((0..=2).contains(&fd));
    // SAFETY: descriptors 0-2 are never closed by berth, so the borrow cannot
    // outlive them.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

/// Resets every catchable signal to its default disposition (the child of a
/// process that handled signals must not keep handlers pointing into code it
/// is about to replace).
pub fn reset_signal_dispositions() {
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: installing SIG_DFL is always sound; errors (for signal
        // numbers the kernel reserves) are ignored on purpose.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
}

/// `execve(2)` that returns only on failure.
pub fn execve(path: &CStr, argv: &[&CStr], envp: &[&CStr]) -> io::Error {
    match nix::unistd::execve(path, argv, envp) {
        Err(e) => io::Error::from_raw_os_error(e as i32),
        Ok(never) => match never {},
    }
}

/// `setrlimit(2)` for any resource number.
pub fn setrlimit(resource: libc::__rlimit_resource_t, lim: &libc::rlimit) -> io::Result<()> {
    // SAFETY: `lim` points to a valid rlimit struct for the whole call.
    let ret = unsafe { libc::setrlimit(resource, lim) };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `getrlimit(2)` for any resource number.
pub fn getrlimit(resource: libc::__rlimit_resource_t) -> io::Result<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct to a valid local.
    let ret = unsafe { libc::getrlimit(resource, &mut lim) };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(lim)
}

/// `dup2(fd, target)` for the standard descriptors 0-2 of a child about to
/// exec; `fd` stays open.
pub fn dup_onto(fd: BorrowedFd<'_>, target: RawFd) -> io::Result<()> {
    if fd.as_raw_fd() == target {
        // dup2 onto itself would keep FD_CLOEXEC set: clear it instead.
        return nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        )
        .map(|_| ())
        .map_err(io::Error::from);
    }
    // SAFETY: dup2 only manipulates the descriptor table; `fd` is valid for
    // the call and `target` is a standard stream number that we mean to
    // replace.
    let ret = unsafe { libc::dup2(fd.as_raw_fd(), target) };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `_exit(2)`: ends a forked child without running atexit handlers or
/// flushing buffers that belong to the parent.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no Rust-managed state.
    unsafe { libc::_exit(code) }
}

/// `personality(2)`: sets the execution domain of the calling process
/// (`linux.personality` of the OCI spec).
pub fn set_personality(persona: libc::c_ulong) -> io::Result<()> {
    // SAFETY: personality takes a plain integer and changes only how the
    // kernel treats this process; no memory is passed.
    let ret = unsafe { libc::syscall(libc::SYS_personality, persona) };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `setdomainname(2)` in the calling process's UTS namespace.
pub fn set_domainname(name: &[u8]) -> io::Result<()> {
    // SAFETY: the pointer and length describe `name`, a live byte slice that
    // the kernel only reads during the call.
    let ret = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `mount_setattr(2)` with `AT_RECURSIVE | AT_EMPTY_PATH` on the mount that
/// `fd` (an `O_PATH` descriptor) names: sets and clears `MOUNT_ATTR_*` bits
/// on the whole mount tree below it.
pub fn mount_setattr_recursive(fd: BorrowedFd<'_>, set: u64, clear: u64) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: 0,
    };
    let empty = c"";
    // SAFETY: `fd` is a valid descriptor for the call; the path is an empty
    // NUL-terminated string (AT_EMPTY_PATH); `attr` is a live, properly laid
    // out `struct mount_attr` whose size is passed; the kernel only reads it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            empty.as_ptr(),
            (libc::AT_RECURSIVE | libc::AT_EMPTY_PATH) as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `ioprio_set(IOPRIO_WHO_PROCESS, 0, ...)`: the I/O priority of the calling
/// process (`process.ioPriority`).
pub fn set_ioprio(class: u32, level: u32) -> io::Result<()> {
    const IOPRIO_WHO_PROCESS: libc::c_int = 1;
    let prio = (class << 13) | (level & 0x1fff);
    // SAFETY: ioprio_set takes integers only.
    let ret = unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, prio) };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets or clears `FD_CLOEXEC` on a descriptor number that the caller did
/// not open itself (the runtime keeps `--preserve-fds` open for the
/// container and closes every other inherited one at exec). Fails with
/// `EBADF` when the descriptor is not open.
pub fn set_cloexec(fd: RawFd, cloexec: bool) -> io::Result<()> {
    let flags = if cloexec { libc::FD_CLOEXEC } else { 0 };
    // SAFETY: F_SETFD with an integer argument only changes descriptor flags;
    // an invalid descriptor number makes the call fail with EBADF.
    let ret = unsafe { libc::fcntl(fd, libc::F_SETFD, flags) };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Borrows a descriptor number the caller has checked is open and keeps
/// open while the borrow lives (used for descriptors named on a command
/// line).
pub fn borrow_fd(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: callers only pass descriptors inherited by this process that
    // stay open for the rest of its (short) life.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

/// `close_range(2)` over `first..=last` with `flags` (0 closes them,
/// `CLOSE_RANGE_CLOEXEC` only marks them close-on-exec). `ENOSYS` on
/// kernels older than 5.9 (5.11 for the flag): callers fall back.
pub fn close_range(first: u32, last: u32, flags: u32) -> io::Result<()> {
    // SAFETY: close_range takes integers only and touches nothing but this
    // process's descriptor table. Callers own (or mean to close) every
    // descriptor in the range: no Rust object is left owning a closed one
    // that it will use again (the range excludes what the caller keeps).
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first, last, flags) };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `close(2)` of a descriptor number nobody owns as a Rust object (the
/// `close_range` fallback); errors are ignored.
pub fn close_raw(fd: RawFd) {
    // SAFETY: as for close_range: the caller closes a number it does not
    // keep, and no Rust owner will use it again.
    unsafe {
        libc::close(fd);
    }
}

/// `open_tree(AT_FDCWD, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC)`: a
/// detached copy of the mount at `path` (a bind of just that file when
/// `path` is a file), as an `O_PATH` descriptor.
pub fn open_tree_clone(path: &CStr) -> io::Result<OwnedFd> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    // SAFETY: `path` is a live NUL-terminated string the kernel only reads;
    // the other arguments are integers.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(own_fd(ret as RawFd))
}

/// `ioctl(master, TIOCGPTPEER, flags)`: opens the slave of a pty master
/// without looking its path up.
pub fn pty_peer(master: BorrowedFd<'_>, flags: libc::c_int) -> io::Result<OwnedFd> {
    const TIOCGPTPEER: libc::c_ulong = 0x5441;
    // SAFETY: TIOCGPTPEER takes an integer (open flags) and returns a new
    // descriptor; `master` is valid for the call.
    let ret = unsafe { libc::ioctl(master.as_raw_fd(), TIOCGPTPEER, flags) };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(own_fd(ret))
}
