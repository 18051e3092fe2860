//! One vsock stream connection and its credit accounting.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::unix::net::UnixStream;

use super::packet::{op, Header, HOST_CID, TYPE_STREAM};

/// Receive buffer each connection advertises to the guest.
pub const CONN_BUF: u32 = 256 << 10;

/// Connection state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Host asked (`CONNECT <port>`); waiting for the guest's RESPONSE.
    Connecting,
    /// Data may flow.
    Established,
}

/// A connection between a host Unix stream and a guest vsock port.
pub struct Conn {
    /// The host side.
    pub stream: UnixStream,
    /// Host-side vsock port.
    pub local_port: u32,
    /// Guest-side vsock port.
    pub peer_port: u32,
    /// State.
    pub state: State,
    /// Guest's receive buffer size.
    pub peer_buf_alloc: u32,
    /// Bytes the guest has consumed.
    pub peer_fwd_cnt: u32,
    /// Bytes sent to the guest.
    pub tx_cnt: u32,
    /// Bytes written to the host stream.
    pub fwd_cnt: u32,
    /// `fwd_cnt` last told to the guest.
    pub last_fwd_sent: u32,
    /// Guest data the host stream has not taken yet (at most [`CONN_BUF`]).
    pub to_host: VecDeque<u8>,
    /// Leading bytes of `to_host` that are not guest data (the `OK` line).
    pub uncounted: usize,
    /// The stream may have data (edge-triggered readiness seen).
    pub readable: bool,
    /// The host shut its sending side (or closed).
    pub host_eof: bool,
    /// The guest will send no more.
    pub guest_shut_send: bool,
    /// The guest will receive no more.
    pub guest_shut_rcv: bool,
}

impl Conn {
    /// A new connection.
    pub fn new(stream: UnixStream, local_port: u32, peer_port: u32, state: State) -> Self {
        Self {
            stream,
            local_port,
            peer_port,
            state,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            tx_cnt: 0,
            fwd_cnt: 0,
            last_fwd_sent: 0,
            to_host: VecDeque::new(),
            uncounted: 0,
            readable: false,
            host_eof: false,
            guest_shut_send: false,
            guest_shut_rcv: false,
        }
    }

    /// Bytes the guest can still take (its buffer minus bytes in flight).
    pub fn peer_credit(&self) -> u32 {
        let in_flight = self.tx_cnt.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// A header from the host side of this connection.
    pub fn header(&mut self, guest_cid: u64, op: u16, len: u32, flags: u32) -> Header {
        self.last_fwd_sent = self.fwd_cnt;
        Header {
            src_cid: HOST_CID,
            dst_cid: guest_cid,
            src_port: self.local_port,
            dst_port: self.peer_port,
            len,
            type_: TYPE_STREAM,
            op,
            flags,
            buf_alloc: CONN_BUF,
            fwd_cnt: self.fwd_cnt,
        }
    }

    /// Whether enough was consumed since the last report to tell the guest.
    pub fn wants_credit_update(&self) -> bool {
        self.fwd_cnt.wrapping_sub(self.last_fwd_sent) >= CONN_BUF / 2
    }

    /// Takes guest data; `false` if the guest overran the credit it was given.
    pub fn push_to_host(&mut self, data: &[u8]) -> io::Result<bool> {
        if self.to_host.len() + data.len() > CONN_BUF as usize {
            return Ok(false);
        }
        let mut off = 0;
        if self.to_host.is_empty() {
            off = write_some(&mut self.stream, data)?;
            self.fwd_cnt = self.fwd_cnt.wrapping_add(off as u32);
        }
        self.to_host.extend(&data[off..]);
        Ok(true)
    }

    /// Sends a protocol line (`OK <port>`) that does not count as guest data.
    pub fn push_line(&mut self, line: &[u8]) -> io::Result<()> {
        let off = if self.to_host.is_empty() {
            write_some(&mut self.stream, line)?
        } else {
            0
        };
        self.to_host.extend(&line[off..]);
        self.uncounted += line.len() - off;
        Ok(())
    }

    /// Writes buffered guest data to the host stream as far as it goes.
    pub fn flush(&mut self) -> io::Result<()> {
        while !self.to_host.is_empty() {
            let (a, _) = self.to_host.as_slices();
            let n = write_some(&mut self.stream, a)?;
            if n == 0 {
                break;
            }
            self.to_host.drain(..n);
            let skip = n.min(self.uncounted);
            self.uncounted -= skip;
            self.fwd_cnt = self.fwd_cnt.wrapping_add((n - skip) as u32);
        }
        if self.to_host.is_empty() && self.guest_shut_send {
            let _ = self.stream.shutdown(std::net::Shutdown::Write);
        }
        Ok(())
    }
}

/// Writes what the non-blocking stream takes now.
fn write_some(s: &mut UnixStream, data: &[u8]) -> io::Result<usize> {
    let mut off = 0;
    while off < data.len() {
        match s.write(&data[off..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => off += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(off)
}

/// A reply to a packet for which there is no connection.
pub fn rst_for(h: &Header) -> Header {
    Header {
        src_cid: h.dst_cid,
        dst_cid: h.src_cid,
        src_port: h.dst_port,
        dst_port: h.src_port,
        len: 0,
        type_: TYPE_STREAM,
        op: op::RST,
        flags: 0,
        buf_alloc: 0,
        fwd_cnt: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_wraps_and_saturates() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut c = Conn::new(a, 1, 2, State::Established);
        c.peer_buf_alloc = 100;
        c.tx_cnt = 60;
        c.peer_fwd_cnt = 20;
        assert_eq!(c.peer_credit(), 60);
        c.tx_cnt = 5u32.wrapping_sub(10); // wrapped counter
        c.peer_fwd_cnt = 0u32.wrapping_sub(50);
        assert_eq!(c.peer_credit(), 55);
        c.peer_fwd_cnt = c.tx_cnt.wrapping_sub(500); // guest claims too little: no credit
        assert_eq!(c.peer_credit(), 0);
    }
}
