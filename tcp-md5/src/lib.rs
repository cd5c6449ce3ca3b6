//! TCP MD5 signatures (RFC 2385) for BGP sessions whose `BGPPeer` has a `passwordSecret`.
//!
//! Linux signs and checks every segment to and from `peer` once the key is set on the socket:
//! before `connect()` (the SYN must be signed), or on a listening socket before the peer's SYN
//! arrives. A segment with a wrong or missing signature is dropped without a word, so a wrong
//! password shows as a connection that never completes. Neither nix nor socket2 offers the
//! option; `TCP_MD5SIG` takes a `struct tcp_md5sig` that libc does not define either.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

/// The longest key the kernel takes (`TCP_MD5SIG_MAXKEYLEN`).
pub const MAX_KEY_LEN: usize = 80;

/// `TCP_MD5SIG` in `linux/tcp.h`.
const TCP_MD5SIG: libc::c_int = 14;

/// `struct sockaddr_storage`: 128 bytes, aligned as its largest member.
#[repr(C, align(8))]
struct SockaddrStorage([u8; 128]);

/// `struct tcp_md5sig` (`linux/tcp.h`).
#[repr(C)]
struct TcpMd5Sig {
    addr: SockaddrStorage,
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: libc::c_int,
    key: [u8; MAX_KEY_LEN],
}

impl TcpMd5Sig {
    fn new(peer: IpAddr, key: &[u8]) -> io::Result<TcpMd5Sig> {
        if key.len() > MAX_KEY_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a TCP MD5 key has at most {MAX_KEY_LEN} bytes"),
            ));
        }
        let mut addr = [0u8; 128];
        // sockaddr_in / sockaddr_in6: family in host order, port 0 (any), the address.
        match peer {
            IpAddr::V4(ip) => {
                addr[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
                addr[4..8].copy_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                addr[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
                addr[8..24].copy_from_slice(&ip.octets());
            }
        }
        let mut bytes = [0u8; MAX_KEY_LEN];
        bytes[..key.len()].copy_from_slice(key);
        Ok(TcpMd5Sig {
            addr: SockaddrStorage(addr),
            flags: 0,
            prefixlen: 0,
            keylen: key.len() as u16,
            ifindex: 0,
            key: bytes,
        })
    }
}

/// Signs the socket's segments to and from `peer` with `key`; an empty key removes it. The
/// socket's family must be the peer's (an IPv6 socket takes an IPv4 peer as mapped, which this
/// does not do).
pub fn set_key(socket: BorrowedFd<'_>, peer: IpAddr, key: &[u8]) -> io::Result<()> {
    let sig = TcpMd5Sig::new(peer, key)?;
    // SAFETY: `sig` is a live, initialised `struct tcp_md5sig` (layout checked by the tests)
    // and the length passed is its size; the kernel only reads it during the call.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            TCP_MD5SIG,
            (&sig as *const TcpMd5Sig).cast::<libc::c_void>(),
            std::mem::size_of::<TcpMd5Sig>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use socket2::{Domain, Socket, Type};
    use std::io::{Read, Write};
    use std::net::SocketAddr;
    use std::os::fd::AsFd;
    use std::time::Duration;

    #[test]
    fn the_struct_has_the_kernels_layout() {
        assert_eq!(std::mem::size_of::<TcpMd5Sig>(), 216);
        assert_eq!(std::mem::offset_of!(TcpMd5Sig, flags), 128);
        assert_eq!(std::mem::offset_of!(TcpMd5Sig, keylen), 130);
        assert_eq!(std::mem::offset_of!(TcpMd5Sig, ifindex), 132);
        assert_eq!(std::mem::offset_of!(TcpMd5Sig, key), 136);
        assert!(TcpMd5Sig::new("127.0.0.1".parse().unwrap(), &[0; 81]).is_err());
    }

    /// A listener on loopback `ip` that signs with `key` and echoes one byte per connection.
    fn echo_listener(ip: IpAddr, key: &[u8]) -> SocketAddr {
        let listener = Socket::new(
            Domain::for_address(SocketAddr::new(ip, 0)),
            Type::STREAM,
            None,
        )
        .unwrap();
        set_key(listener.as_fd(), ip, key).unwrap();
        listener.bind(&SocketAddr::new(ip, 0).into()).unwrap();
        listener.listen(8).unwrap();
        let address = listener.local_addr().unwrap().as_socket().unwrap();
        // Ends with the test process; only signed connections ever reach accept().
        std::thread::spawn(move || {
            while let Ok((mut stream, _)) = listener.accept() {
                let mut byte = [0u8; 1];
                if stream.read_exact(&mut byte).is_ok() {
                    let _ = stream.write_all(&byte);
                }
            }
        });
        address
    }

    /// Whether a connection signed with `key` (none: unsigned) gets its byte back.
    fn echoed(to: SocketAddr, key: Option<&[u8]>) -> bool {
        let mut socket = Socket::new(Domain::for_address(to), Type::STREAM, None).unwrap();
        if let Some(key) = key {
            set_key(socket.as_fd(), to.ip(), key).unwrap();
        }
        // A dropped SYN leaves connect() retrying for minutes: 1 s is plenty on loopback.
        if socket
            .connect_timeout(&to.into(), Duration::from_secs(1))
            .is_err()
        {
            return false;
        }
        socket
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        let mut byte = [0u8; 1];
        socket.write_all(b"x").is_ok() && socket.read_exact(&mut byte).is_ok() && byte == *b"x"
    }

    #[test]
    fn only_a_connection_signed_with_the_same_key_gets_through() {
        // Both families: the key's address is laid out differently in each.
        for ip in ["127.0.0.1", "::1"] {
            let listener = echo_listener(ip.parse().unwrap(), b"s3cret");
            assert!(echoed(listener, Some(b"s3cret")), "{ip}");
            assert!(!echoed(listener, Some(b"wrong")), "{ip}");
            assert!(!echoed(listener, None), "{ip}");
        }
        // And a signed connection to an unsigned listener is refused by it too.
        let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let plain_address = plain.local_addr().unwrap();
        std::thread::spawn(move || {
            for mut stream in plain.incoming().flatten() {
                let mut byte = [0u8; 1];
                if stream.read_exact(&mut byte).is_ok() {
                    let _ = stream.write_all(&byte);
                }
            }
        });
        assert!(echoed(plain_address, None));
        assert!(!echoed(plain_address, Some(b"s3cret")));
    }
}
