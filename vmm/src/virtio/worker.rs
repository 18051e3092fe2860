//! The device event loop: one epoll thread per active device.
//!
//! A device's [`Handler`] gets called for queue notifications (token = queue
//! position) and for its own backend fds (tokens it registers from
//! [`BACKEND_TOKEN_BASE`] up). Any error ends in `NEEDS_RESET`; the thread
//! then idles until the transport resets the device.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use virtio_queue::Queue;

use super::{ActivateError, ActiveQueue, DeviceError, VirtioInterrupt};

/// First token a handler may use for its own fds.
pub const BACKEND_TOKEN_BASE: u64 = 1 << 16;
const KILL_TOKEN: u64 = u64::MAX;

/// Registration of extra fds, usable from inside a handler.
pub struct EpollCtl<'a>(&'a Epoll);

impl EpollCtl<'_> {
    /// Watches `fd` for `events`, reporting `token`.
    pub fn add(&self, fd: RawFd, token: u64, events: EventSet) -> io::Result<()> {
        self.0
            .ctl(ControlOperation::Add, fd, EpollEvent::new(events, token))
    }
    /// Changes what `fd` is watched for.
    pub fn modify(&self, fd: RawFd, token: u64, events: EventSet) -> io::Result<()> {
        self.0
            .ctl(ControlOperation::Modify, fd, EpollEvent::new(events, token))
    }
    /// Stops watching `fd`.
    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.0
            .ctl(ControlOperation::Delete, fd, EpollEvent::default())
    }
}

/// What a device does on its worker thread.
pub trait Handler: Send + 'static {
    /// Registers backend fds; called once on the worker thread.
    fn init(&mut self, ctl: &EpollCtl<'_>) -> Result<(), DeviceError> {
        let _ = ctl;
        Ok(())
    }
    /// The driver notified queue position `q` (the eventfd is already drained).
    fn queue_notified(&mut self, ctl: &EpollCtl<'_>, q: usize) -> Result<(), DeviceError>;
    /// A backend fd registered with `token` is ready.
    fn backend_event(
        &mut self,
        ctl: &EpollCtl<'_>,
        token: u64,
        events: EventSet,
    ) -> Result<(), DeviceError> {
        let _ = (ctl, token, events);
        Ok(())
    }
}

/// A running worker; [`Worker::stop`] joins the thread and gives the
/// handler (and so the device's backend) back.
pub struct Worker<H> {
    kill: EventFd,
    thread: Option<JoinHandle<Option<H>>>,
}

impl<H: Handler> Worker<H> {
    /// Spawns `name` serving `notify` (one eventfd per queue, token = position).
    /// On failure the handler comes back with the error, so the device keeps
    /// its backend and a later activation can try again.
    pub fn spawn(
        name: &str,
        notify: Vec<EventFd>,
        irq: Arc<dyn VirtioInterrupt>,
        handler: H,
    ) -> Result<Self, (io::Error, H)> {
        let (kill, kill2, epoll) = match Self::setup(&notify) {
            Ok(v) => v,
            Err(e) => return Err((e, handler)),
        };
        // The handler goes over a channel after the thread exists, so a
        // failed spawn leaves it with the caller.
        let (htx, hrx) = mpsc::sync_channel::<H>(1);
        let spawned = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let mut handler = hrx.recv().ok()?;
                if let Err(e) = run(&epoll, &notify, &mut handler) {
                    tracing::warn!("virtio device needs reset: {e}");
                    irq.set_needs_reset();
                    wait_readable(&kill2);
                }
                Some(handler)
            });
        let thread = match spawned {
            Ok(t) => t,
            Err(e) => return Err((e, handler)),
        };
        if let Err(mpsc::SendError(h)) = htx.send(handler) {
            let _ = thread.join();
            return Err((io::Error::other("worker thread exited early"), h));
        }
        Ok(Self {
            kill,
            thread: Some(thread),
        })
    }

    fn setup(notify: &[EventFd]) -> io::Result<(EventFd, EventFd, Epoll)> {
        let kill = EventFd::new(libc::EFD_NONBLOCK)?;
        let kill2 = kill.try_clone()?;
        let epoll = Epoll::new()?;
        epoll.ctl(
            ControlOperation::Add,
            kill2.as_raw_fd(),
            EpollEvent::new(EventSet::IN, KILL_TOKEN),
        )?;
        for (i, e) in notify.iter().enumerate() {
            epoll.ctl(
                ControlOperation::Add,
                e.as_raw_fd(),
                EpollEvent::new(EventSet::IN, i as u64),
            )?;
        }
        Ok((kill, kill2, epoll))
    }

    /// Stops the thread and waits for it; returns the handler unless the
    /// thread panicked.
    pub fn stop(&mut self) -> Option<H> {
        let t = self.thread.take()?;
        let _ = self.kill.write(1);
        t.join().ok().flatten()
    }
}

impl<H> Drop for Worker<H> {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = self.kill.write(1);
            let _ = t.join();
        }
    }
}

/// Checks that the driver set up `need` queues and splits them into their
/// notifiers (worker tokens = positions) and ring states, in queue order.
pub fn split_queues(
    queues: Vec<ActiveQueue>,
    need: usize,
) -> Result<(Vec<EventFd>, Vec<Queue>), ActivateError> {
    if queues.len() != need {
        return Err(ActivateError::QueueCount {
            need,
            got: queues.len(),
        });
    }
    Ok(queues.into_iter().map(|q| (q.notify, q.queue)).unzip())
}

/// The activation every worker-backed device shares: runs `handler` on a
/// worker named `name`; if the thread cannot start, `back` takes the backend
/// out of the returned handler into `backend`, so the device keeps it and a
/// later activation can try again.
pub fn start<H: Handler, B>(
    worker: &mut Option<Worker<H>>,
    backend: &mut Option<B>,
    name: &str,
    notify: Vec<EventFd>,
    irq: Arc<dyn VirtioInterrupt>,
    handler: H,
    back: impl FnOnce(H) -> B,
) -> Result<(), ActivateError> {
    match Worker::spawn(name, notify, irq, handler) {
        Ok(w) => {
            *worker = Some(w);
            Ok(())
        }
        Err((e, h)) => {
            *backend = Some(back(h));
            Err(e.into())
        }
    }
}

/// The reset every worker-backed device shares: stops the worker (if any)
/// and puts the backend back into `backend`; `false` if the worker thread
/// panicked and the backend is lost (the transport then reports `FAILED`).
pub fn stop<H: Handler, B>(
    worker: &mut Option<Worker<H>>,
    backend: &mut Option<B>,
    back: impl FnOnce(H) -> B,
) -> bool {
    let Some(mut w) = worker.take() else {
        return true;
    };
    match w.stop() {
        Some(h) => {
            *backend = Some(back(h));
            true
        }
        None => false,
    }
}

/// Serves events until killed (`Ok`) or until the device breaks (`Err`).
fn run<H: Handler>(epoll: &Epoll, notify: &[EventFd], handler: &mut H) -> Result<(), DeviceError> {
    let ctl = EpollCtl(epoll);
    handler.init(&ctl)?;
    let mut events = vec![EpollEvent::default(); 32];
    loop {
        let n = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        for ev in &events[..n] {
            let token = ev.data();
            if token == KILL_TOKEN {
                return Ok(());
            }
            if let Some(e) = notify.get(token as usize) {
                let _ = e.read();
                handler.queue_notified(&ctl, token as usize)?;
            } else {
                handler.backend_event(&ctl, token, ev.event_set())?;
            }
        }
    }
}

fn wait_readable(fd: &EventFd) {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: `p` is one valid pollfd that outlives the call.
        let r = unsafe { libc::poll(&mut p, 1, -1) };
        if r > 0 || (r < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::{FromRawFd, IntoRawFd};

    use super::*;
    use crate::virtio::InterruptReason;

    struct Counter(u32);
    impl Handler for Counter {
        fn queue_notified(&mut self, _: &EpollCtl<'_>, _: usize) -> Result<(), DeviceError> {
            self.0 += 1;
            Ok(())
        }
    }

    struct NoIrq;
    impl VirtioInterrupt for NoIrq {
        fn trigger(&self, _: InterruptReason) -> io::Result<()> {
            Ok(())
        }
        fn set_needs_reset(&self) {}
    }

    #[test]
    fn failed_spawn_gives_the_handler_back() {
        // epoll refuses a regular file (EPERM): the setup fails after the
        // handler was handed in, and it must come back unharmed.
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        // SAFETY: the fd is owned (taken from `file`) and only closed by
        // the EventFd, once; it is never used as an eventfd.
        let bad = unsafe { EventFd::from_raw_fd(file.into_raw_fd()) };
        match Worker::spawn("t", vec![bad], Arc::new(NoIrq), Counter(7)) {
            Err((e, h)) => {
                assert_eq!(h.0, 7);
                assert_eq!(e.raw_os_error(), Some(libc::EPERM));
            }
            Ok(_) => panic!("epoll took a regular file"),
        }
        // The same handler then runs in a working worker and comes back.
        let ok = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let kick = ok.try_clone().unwrap();
        let mut w = Worker::spawn("t", vec![ok], Arc::new(NoIrq), Counter(7))
            .map_err(|(e, _)| e)
            .unwrap();
        kick.write(1).unwrap();
        // Once the worker drained the eventfd it calls the handler in the
        // same loop iteration, before it can see the stop request.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut p = libc::pollfd {
            fd: kick.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        while unsafe { libc::poll(&mut p, 1, 0) } == 1 {
            assert!(std::time::Instant::now() < deadline, "kick not served");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let h = w.stop().expect("handler back");
        assert_eq!(h.0, 8);
    }
}
