//! TAP devices for microVM guests: QEMU gets the open descriptor, so it
//! needs no privilege to reach the network, and the device is gone as
//! soon as the last descriptor closes (no persistent device to clean up
//! after a crash).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::{NetError, Result};

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Creates the TAP device `name` in the calling thread's network namespace
/// (no packet-information header, no virtio-net header) and returns its
/// queue. The device lives as long as a descriptor of it is open.
pub fn open(name: &str) -> Result<OwnedFd> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(NetError::Invalid(format!(
            "invalid TAP device name {name:?}"
        )));
    }
    let fail = |what: &str, source: std::io::Error| NetError::Io {
        what: format!("{what} TAP device {name}"),
        source,
    };
    // SAFETY: a constant NUL-terminated path; the result is checked.
    let fd = unsafe {
        libc::open(
            c"/dev/net/tun".as_ptr(),
            libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK,
        )
    };
    if fd < 0 {
        return Err(fail(
            "opening /dev/net/tun for",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TAP | IFF_NO_PI,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads (and writes back the name into) an ifreq,
    // which `req` is, and which outlives the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReq) };
    if rc != 0 {
        return Err(fail("creating", std::io::Error::last_os_error()));
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifreq_has_the_kernels_size() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
    }

    #[test]
    fn names_are_checked() {
        assert!(open("").is_err());
        assert!(open("a-name-that-is-too-long").is_err());
    }
}
