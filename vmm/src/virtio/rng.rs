//! virtio-rng (entropy device), fed from the host's getrandom(2).

use std::io;
use std::sync::Arc;

use virtio_queue::Queue;

use super::queue::{add_used, pop_chain, quiesce, rearm, signal_used, write_segments};
use super::worker::{self, EpollCtl, Handler, Worker};
use super::{
    features, types, ActivateError, ActiveQueue, DeviceError, VirtioDevice, VirtioInterrupt,
};
use crate::memory::GuestMemory;

/// Queue size offered.
pub const QUEUE_SIZE: u16 = 256;
/// Most bytes served per request; a driver asking for more gets this many.
pub const MAX_REQUEST: usize = 64 << 10;

/// A virtio-rng device.
#[derive(Default)]
pub struct Rng {
    worker: Option<Worker<RngHandler>>,
}

impl Rng {
    /// A new entropy device.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Fills `buf` from getrandom(2).
pub fn fill_random(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: the kernel writes at most `rest.len()` bytes into `rest`.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(())
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        types::RNG
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }
    fn features(&self) -> u64 {
        features::VERSION_1 | features::RING_INDIRECT_DESC | features::RING_EVENT_IDX
    }
    fn ack_features(&mut self, _value: u64) {}
    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn activate(
        &mut self,
        mem: GuestMemory,
        interrupt: Arc<dyn VirtioInterrupt>,
        queues: Vec<ActiveQueue>,
    ) -> Result<(), ActivateError> {
        if self.worker.is_some() {
            return Err(ActivateError::AlreadyActive);
        }
        let (notify, mut qs) = worker::split_queues(queues, 1)?;
        let h = RngHandler {
            mem,
            irq: interrupt.clone(),
            queue: qs.remove(0),
            buf: vec![0; MAX_REQUEST],
        };
        worker::start(
            &mut self.worker,
            &mut None,
            "virtio-rng",
            notify,
            interrupt,
            h,
            |_| (),
        )
    }
    fn reset(&mut self) -> bool {
        worker::stop(&mut self.worker, &mut None, |_| ())
    }
}

struct RngHandler {
    mem: GuestMemory,
    irq: Arc<dyn VirtioInterrupt>,
    queue: Queue,
    buf: Vec<u8>,
}

impl Handler for RngHandler {
    fn queue_notified(&mut self, _: &EpollCtl<'_>, _: usize) -> Result<(), DeviceError> {
        let mut any = false;
        loop {
            quiesce(&mut self.queue, &self.mem)?;
            while let Some(chain) = pop_chain(&mut self.queue, &self.mem)? {
                let want = usize::try_from(chain.writable_len())
                    .unwrap_or(usize::MAX)
                    .min(MAX_REQUEST);
                let buf = &mut self.buf[..want];
                fill_random(buf)?;
                let n = write_segments(&self.mem, &chain.writable, 0, buf);
                add_used(&mut self.queue, &self.mem, chain.head, n as u32)?;
                any = true;
            }
            if !rearm(&mut self.queue, &self.mem)? {
                break;
            }
        }
        if any {
            signal_used(&mut self.queue, &self.mem, self.irq.as_ref(), 0)?;
        }
        Ok(())
    }
}
