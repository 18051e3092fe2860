//! Hostile rings and virtio-blk requests: the input is the start of guest RAM:
//! byte 0 picks the queue size (1..=16), the descriptor table is at 0, the
//! available ring at 0x100, the used ring at 0x200, buffers anywhere (also
//! outside RAM, which must be refused). Every chain is walked
//! and validated, then parsed as a block request; nothing may panic or touch
//! memory outside the 64 KiB of guest RAM.
#![no_main]

use libfuzzer_sys::fuzz_target;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};
use zvisor_vmm::memory;
use zvisor_vmm::virtio::block::request;
use zvisor_vmm::virtio::queue::pop_chain;

const RAM: usize = 64 << 10;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let mem = memory::create(&[(GuestAddress(0), RAM)]).unwrap();
    let n = data.len().min(RAM);
    mem.write_slice(&data[..n], GuestAddress(0)).unwrap();
    // Powers of two only: the transport refuses other sizes before a device
    // ever sees the queue.
    let size = 1u16 << (data[0] % 5);
    let mut q = Queue::new(256).unwrap();
    q.set_size(size);
    q.set_desc_table_address(Some(0), Some(0));
    q.set_avail_ring_address(Some(0x100), Some(0));
    q.set_used_ring_address(Some(0x200), Some(0));
    q.set_ready(true);
    if !q.is_valid(&mem) {
        return;
    }
    for _ in 0..512 {
        match pop_chain(&mut q, &mem) {
            Ok(Some(chain)) => {
                if let Some(req) = request::parse(&mem, &chain) {
                    if let Ok(op) = &req.op {
                        let _ = request::ranges(&mem, &chain, op, 4);
                        let _ = request::byte_range(op.sector, op.len, 1 << 30);
                    }
                }
                let _ = q.add_used(&mem, chain.head, 1);
            }
            Ok(None) | Err(_) => break,
        }
    }
});
