//! Hostile rings and virtio-blk requests: the input is the start of guest RAM:
//! byte 0 picks the queue size (1..=16), the descriptor table is at 0, the
//! available ring at 0x100, the used ring at 0x200, buffers anywhere (also
//! outside RAM, which must be refused). Every chain is walked
//! and validated, then parsed as a block request; nothing may panic or touch
//! memory outside the 64 KiB of guest RAM. The same ring is also served, in a
//! second copy of the memory, by the split-ring fast path (`FastQueue`),
//! which must give the same chains, errors, queue state and used ring.
#![no_main]

use libfuzzer_sys::fuzz_target;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};
use zvisor_vmm::memory;
use zvisor_vmm::virtio::block::request;
use zvisor_vmm::virtio::queue::fast::FastQueue;
use zvisor_vmm::virtio::queue::{pop_chain, Chain};

const RAM: usize = 64 << 10;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let mem = memory::create(&[(GuestAddress(0), RAM)]).unwrap();
    let mem2 = memory::create(&[(GuestAddress(0), RAM)]).unwrap();
    let n = data.len().min(RAM);
    mem.write_slice(&data[..n], GuestAddress(0)).unwrap();
    mem2.write_slice(&data[..n], GuestAddress(0)).unwrap();
    // Powers of two only: the transport refuses other sizes before a device
    // ever sees the queue.
    let size = 1u16 << (data[0] % 5);
    let mk = || {
        let mut q = Queue::new(256).unwrap();
        q.set_size(size);
        q.set_desc_table_address(Some(0), Some(0));
        q.set_avail_ring_address(Some(0x100), Some(0));
        q.set_used_ring_address(Some(0x200), Some(0));
        q.set_ready(true);
        q
    };
    let mut q = mk();
    if !q.is_valid(&mem) {
        return;
    }
    let mut fq = FastQueue::new(mk(), &mem2);
    assert!(fq.is_fast());
    let mut fchain = Chain::default();
    for _ in 0..512 {
        let slow = pop_chain(&mut q, &mem);
        let fast = fq.pop_chain_into(&mem2, &mut fchain);
        match (&slow, &fast) {
            (Ok(Some(c)), Ok(true)) => assert_eq!(*c, fchain),
            (Ok(None), Ok(false)) => {}
            (Err(a), Err(b)) => assert_eq!(a, b),
            _ => panic!("virtio-queue {slow:?} vs fast path {fast:?}"),
        }
        assert_eq!(q.state(), fq.queue().state());
        match slow {
            Ok(Some(chain)) => {
                if let Some(req) = request::parse(&mem, &chain) {
                    if let Ok(op) = &req.op {
                        let _ = request::ranges(&mem, &chain, op, 4);
                        let _ = request::byte_range(op.sector, op.len, 1 << 30);
                    }
                }
                let a = q.add_used(&mem, chain.head, 1).is_ok();
                let b = fq.add_used(&mem2, chain.head, 1).is_ok();
                assert_eq!(a, b);
                assert_eq!(q.state(), fq.queue().state());
            }
            Ok(None) | Err(_) => break,
        }
    }
    let (mut a, mut b) = (vec![0u8; RAM], vec![0u8; RAM]);
    mem.read_slice(&mut a, GuestAddress(0)).unwrap();
    mem2.read_slice(&mut b, GuestAddress(0)).unwrap();
    assert!(a == b, "guest memory differs");
});
