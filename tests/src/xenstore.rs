//! A xenstore client speaking the wire protocol (xen/include/public/io/
//! xs_wire.h) itself: over xenstored's socket in dom0, over the kernel's
//! `/dev/xen/xenbus` in a domU, which has no toolstack libraries. Reads
//! and writes only; a relative path is under the caller's
//! `/local/domain/<id>/`.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// `enum xsd_sockmsg_type`.
const XS_READ: u32 = 2;
const XS_WRITE: u32 = 11;
const XS_ERROR: u32 = 16;
/// `XENSTORE_PAYLOAD_MAX`.
const PAYLOAD_MAX: usize = 4096;

trait Wire: Read + Write + Send {}
impl<T: Read + Write + Send> Wire for T {}

pub struct Xenstore {
    wire: Box<dyn Wire>,
    req_id: u32,
}

/// `struct xsd_sockmsg` and its payload, as one buffer.
fn message(ty: u32, req_id: u32, payload: &[u8]) -> io::Result<Vec<u8>> {
    if payload.len() > PAYLOAD_MAX {
        return Err(io::Error::other(format!("xenstore payload of {} bytes (max {PAYLOAD_MAX})", payload.len())));
    }
    let mut m = Vec::with_capacity(16 + payload.len());
    for w in [ty, req_id, 0, payload.len() as u32] {
        m.extend_from_slice(&w.to_ne_bytes());
    }
    m.extend_from_slice(payload);
    Ok(m)
}

/// A reply's payload, or the error xenstored named (`ENOENT`, `EACCES`...).
fn reply(ty: u32, req_id: u32, header: [u8; 16], body: Vec<u8>) -> io::Result<Vec<u8>> {
    let word = |i: usize| u32::from_ne_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    if word(4) != req_id {
        return Err(io::Error::other(format!("xenstore reply to request {}, sent {req_id}", word(4))));
    }
    match word(0) {
        t if t == ty => Ok(body),
        XS_ERROR => {
            let name = String::from_utf8_lossy(&body).trim_end_matches('\0').to_string();
            let kind = if name == "ENOENT" { io::ErrorKind::NotFound } else { io::ErrorKind::Other };
            Err(io::Error::new(kind, format!("xenstore: {name}")))
        }
        t => Err(io::Error::other(format!("xenstore reply of type {t} to a request of type {ty}"))),
    }
}

impl Xenstore {
    /// xenstored's socket where it runs (dom0), else the kernel's device.
    pub fn open() -> io::Result<Self> {
        let wire: Box<dyn Wire> = match UnixStream::connect("/run/xenstored/socket") {
            Ok(s) => {
                // A xenstored that stops answering fails the caller.
                s.set_read_timeout(Some(Duration::from_secs(10)))?;
                Box::new(s)
            }
            Err(_) => Box::new(std::fs::OpenOptions::new().read(true).write(true).open("/dev/xen/xenbus")?),
        };
        Ok(Xenstore { wire, req_id: 0 })
    }

    fn request(&mut self, ty: u32, payload: &[u8]) -> io::Result<Vec<u8>> {
        self.req_id = self.req_id.wrapping_add(1);
        self.wire.write_all(&message(ty, self.req_id, payload)?)?;
        let mut header = [0u8; 16];
        self.wire.read_exact(&mut header)?;
        let len = u32::from_ne_bytes([header[12], header[13], header[14], header[15]]) as usize;
        if len > PAYLOAD_MAX {
            // Its body is left unread: this connection is no more use.
            return Err(io::Error::other(format!("xenstore reply of {len} bytes (max {PAYLOAD_MAX})")));
        }
        let mut body = vec![0u8; len];
        self.wire.read_exact(&mut body)?;
        reply(ty, self.req_id, header, body)
    }

    pub fn read(&mut self, path: &str) -> io::Result<String> {
        let mut p = path.as_bytes().to_vec();
        p.push(0);
        let v = self.request(XS_READ, &p)?;
        Ok(String::from_utf8_lossy(&v).into_owned())
    }

    pub fn write(&mut self, path: &str, value: &str) -> io::Result<()> {
        let mut p = path.as_bytes().to_vec();
        p.push(0);
        p.extend_from_slice(value.as_bytes());
        self.request(XS_WRITE, &p).map(drop)
    }

    /// Read `path` until it exists and `ok` takes its value, polling.
    pub fn wait_for(&mut self, path: &str, within: Duration, ok: impl Fn(&str) -> bool) -> io::Result<String> {
        let t = Instant::now();
        loop {
            match self.read(path) {
                Ok(v) if ok(&v) => return Ok(v),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            if t.elapsed() > within {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("xenstore {path}: not there within {}s", within.as_secs()),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(ty: u32, req: u32, len: u32) -> [u8; 16] {
        let m = message(ty, req, &vec![0; len as usize]).unwrap();
        m[..16].try_into().unwrap()
    }

    #[test]
    fn a_message_is_the_header_then_the_payload() {
        let m = message(XS_WRITE, 7, b"data/port\x0042").unwrap();
        assert_eq!(&m[..4], &11u32.to_ne_bytes());
        assert_eq!(&m[4..8], &7u32.to_ne_bytes());
        assert_eq!(&m[8..12], &0u32.to_ne_bytes());
        assert_eq!(&m[12..16], &12u32.to_ne_bytes());
        assert_eq!(&m[16..], b"data/port\x0042");
        assert!(message(XS_WRITE, 1, &[0; PAYLOAD_MAX + 1]).is_err());
    }

    #[test]
    fn replies_are_checked_for_their_request_and_errors_named() {
        assert_eq!(reply(XS_READ, 3, header(XS_READ, 3, 2), b"42".to_vec()).unwrap(), b"42");
        let e = reply(XS_READ, 3, header(XS_ERROR, 3, 7), b"ENOENT\0".to_vec()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let e = reply(XS_WRITE, 3, header(XS_ERROR, 3, 7), b"EACCES\0".to_vec()).unwrap_err();
        assert!(e.to_string().contains("EACCES"), "{e}");
        assert!(reply(XS_READ, 3, header(XS_READ, 4, 0), vec![]).is_err());
        assert!(reply(XS_READ, 3, header(XS_WRITE, 3, 0), vec![]).is_err());
    }
}
