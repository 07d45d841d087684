//! The one `unsafe` of the crate: the `TUNSETIFF` ioctl that turns an open `/dev/net/tun`
//! into a TUN device of a given name (layer 3, no packet-information header).
//!
//! Why not a crate: `tun` brings an async stack and a dozen dependencies, `tun-tap`
//! compiles C with `cc`; the call is one ioctl on a 40-byte structure, and nix already
//! wraps `ioctl(2)` (its `ioctl_write_ptr_bad!` makes the function; calling it is the
//! unsafe part, because the kernel reads the structure through a raw pointer).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags in the union, padded to
/// the union's 24 bytes (`sizeof(struct ifreq)` is 40 on Linux).
#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

nix::ioctl_write_ptr_bad!(tunsetiff, libc::TUNSETIFF, IfReq);

/// Whether `name` can be an interface name: 1 to 15 bytes of `[A-Za-z0-9._-]`.
pub fn valid_ifname(name: &str) -> bool {
    (1..libc::IFNAMSIZ).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A TUN device called `name` in the calling thread's network namespace; it lives until
/// the returned descriptor is closed (not persistent).
pub fn open(name: &str) -> io::Result<File> {
    if !valid_ifname(name) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?}"),
        ));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short,
        _pad: [0; 22],
    };
    for (d, s) in req.name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: `req` is a live, initialized `struct ifreq` layout (name NUL-terminated: at
    // most 15 bytes were copied into 16 zeroed ones) for the whole call; TUNSETIFF reads
    // it and writes the chosen name back into it, within its 40 bytes; the descriptor is
    // ours and open.
    unsafe { tunsetiff(file.as_raw_fd(), &req) }.map_err(io::Error::from)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    #[test]
    fn interface_names_are_checked() {
        assert!(super::valid_ifname("eth0"));
        assert!(super::valid_ifname("sc1a2b3"));
        assert!(!super::valid_ifname(""));
        assert!(!super::valid_ifname("sixteen-chars-xx"));
        assert!(!super::valid_ifname("a/b"));
        assert_eq!(std::mem::size_of::<super::IfReq>(), 40);
    }
}
