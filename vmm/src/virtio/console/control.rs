//! virtio-console control messages (`VIRTIO_CONSOLE_F_MULTIPORT`, virtio
//! 1.2 5.3.6.2): `struct virtio_console_control { le32 id; le16 event;
//! le16 value; }`, followed by the name for `PORT_NAME`.
//!
//! Queue layout with multiport: port 0 uses queues 0 (receive) and 1
//! (transmit), the control queues are 2 (device → driver) and 3 (driver →
//! device), port `n ≥ 1` uses `2n + 2` and `2n + 3`.

/// Driver: the device is ready (value 1) or failed (0).
pub const DEVICE_READY: u16 = 0;
/// Device: a port exists (sent for every port after `DEVICE_READY`).
pub const DEVICE_ADD: u16 = 1;
/// Driver: a port is ready (value 1) or failed (0).
pub const PORT_READY: u16 = 3;
/// Both ways: the host end (device → driver) or a guest program (driver →
/// device) opened (1) or closed (0) the port.
pub const PORT_OPEN: u16 = 6;
/// Device: the port's name follows the header.
pub const PORT_NAME: u16 = 7;

/// Size of the message header.
pub const HEADER_LEN: usize = 8;

/// A decoded control message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Control {
    /// Port id.
    pub id: u32,
    /// Event, see the constants.
    pub event: u16,
    /// Event value.
    pub value: u16,
}

impl Control {
    /// Decodes a header; `None` if `b` is too short.
    pub fn decode(b: &[u8]) -> Option<Self> {
        let b: &[u8; HEADER_LEN] = b.get(..HEADER_LEN)?.try_into().ok()?;
        Some(Self {
            id: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            event: u16::from_le_bytes([b[4], b[5]]),
            value: u16::from_le_bytes([b[6], b[7]]),
        })
    }

    /// Encodes the header followed by `tail` (a port name and its NUL).
    pub fn encode(&self, tail: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(HEADER_LEN + tail.len());
        v.extend_from_slice(&self.id.to_le_bytes());
        v.extend_from_slice(&self.event.to_le_bytes());
        v.extend_from_slice(&self.value.to_le_bytes());
        v.extend_from_slice(tail);
        v
    }
}

/// The receive and transmit queue of port `p`.
pub fn port_queues(p: usize) -> (usize, usize) {
    if p == 0 {
        (0, 1)
    } else {
        (2 * p + 2, 2 * p + 3)
    }
}

/// What queue `q` is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueRole {
    /// Port receive queue.
    Rx(usize),
    /// Port transmit queue.
    Tx(usize),
    /// Control, device → driver.
    CtrlRx,
    /// Control, driver → device.
    CtrlTx,
}

/// The role of queue `q` (the inverse of [`port_queues`]).
pub fn queue_role(q: usize) -> QueueRole {
    match q {
        0 => QueueRole::Rx(0),
        1 => QueueRole::Tx(0),
        2 => QueueRole::CtrlRx,
        3 => QueueRole::CtrlTx,
        _ if q.is_multiple_of(2) => QueueRole::Rx(q / 2 - 1),
        _ => QueueRole::Tx(q / 2 - 1),
    }
}

/// Whether `name` is a usable port name: 1 to 127 bytes of letters,
/// digits, `.`, `_` and `-` (it becomes `/dev/virtio-ports/<name>` under
/// udev), e.g. `org.zvisor.agent.0`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_is_little_endian() {
        let c = Control {
            id: 0x0102_0304,
            event: PORT_NAME,
            value: 1,
        };
        let b = c.encode(b"a\0");
        assert_eq!(b, [4, 3, 2, 1, 7, 0, 1, 0, b'a', 0]);
        assert_eq!(Control::decode(&b), Some(c));
        assert_eq!(Control::decode(&b[..7]), None);
    }

    #[test]
    fn queue_layout() {
        for p in 0..40 {
            let (rx, tx) = port_queues(p);
            assert_eq!(queue_role(rx), QueueRole::Rx(p));
            assert_eq!(queue_role(tx), QueueRole::Tx(p));
        }
        assert_eq!(port_queues(1), (4, 5));
        assert_eq!(queue_role(2), QueueRole::CtrlRx);
        assert_eq!(queue_role(3), QueueRole::CtrlTx);
    }

    #[test]
    fn names() {
        assert!(valid_name("org.zvisor.agent.0"));
        assert!(valid_name("a-b_c"));
        assert!(!valid_name(""));
        assert!(!valid_name("a/b"));
        assert!(!valid_name("a b"));
        assert!(!valid_name(&"x".repeat(128)));
    }
}
