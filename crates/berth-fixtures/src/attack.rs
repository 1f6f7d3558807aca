//! What the escape tests set up the way a careless caller or a hostile
//! client would.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

/// `c` runs with descriptors 3..=30 open on the directory `dir` (not
/// close-on-exec), as a careless caller's would be: what berth must not
/// let reach a container (CVE-2024-21626).
pub fn with_open_fds(mut c: Command, dir: &Path) -> Command {
    let dir = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).expect("a path");
    // SAFETY: the closure runs in the forked child before exec and only
    // calls async-signal-safe functions (open, dup2, close) on a path that
    // was allocated before the fork.
    unsafe {
        c.pre_exec(move || {
            let fd = libc::open(dir.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            for n in 3..=30 {
                if n != fd {
                    libc::dup2(fd, n);
                }
            }
            if fd > 30 {
                libc::close(fd);
            }
            Ok(())
        });
    }
    c
}

/// What an attacker who can see process `pid` gets of its binary: an
/// `O_PATH` descriptor of `/proc/PID/exe`, and whether the mount it lies
/// on is read-only (CVE-2019-5736: it must be, for berth's processes).
pub fn binary_of(pid: u32) -> std::io::Result<(std::fs::File, bool)> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(format!("/proc/{pid}/exe"))?;
    // SAFETY: fstatvfs writes one statvfs struct into a zeroed local; the
    // descriptor is open for the call.
    let st = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::fstatvfs(f.as_raw_fd(), &mut st) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        st
    };
    Ok((f, st.f_flag & libc::ST_RDONLY != 0))
}
