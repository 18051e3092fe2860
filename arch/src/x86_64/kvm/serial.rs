//! The 8250 serial console (vm-superio) on the host's stdin/stdout.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::debug;
use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;
use zvisor_vmm::bus::BusDevice;
use zvisor_vmm::config::ConsoleMode;

/// Raises the serial IRQ through a KVM irqfd.
pub struct IrqTrigger(EventFd);

impl Trigger for IrqTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// The serial port as a port I/O bus device.
pub struct SerialDevice(Serial<IrqTrigger, NoEvents, Box<dyn Write + Send>>);

impl SerialDevice {
    /// A serial port that raises `irq` and writes to stdout (or nowhere).
    pub fn new(irq: EventFd, console: ConsoleMode) -> Self {
        let out: Box<dyn Write + Send> = match console {
            ConsoleMode::Native => Box::new(std::io::stdout()),
            ConsoleMode::Off => Box::new(std::io::sink()),
        };
        SerialDevice(Serial::new(IrqTrigger(irq), out))
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        data[0] = self.0.read(offset as u8);
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some(&v) = data.first() {
            if let Err(e) = self.0.write(offset as u8, v) {
                debug!("serial write: {e}");
            }
        }
    }
}

/// Feeds stdin into the serial port's receive FIFO from a thread. Bytes
/// wait (not dropped) while the guest has not drained the FIFO.
pub fn spawn_stdin_reader(serial: Arc<Mutex<SerialDevice>>, console: ConsoleMode) {
    if console != ConsoleMode::Native {
        return;
    }
    let r = std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut buf = [0u8; 64];
            let mut stdin = std::io::stdin().lock();
            loop {
                let n = match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let mut pending = &buf[..n];
                while !pending.is_empty() {
                    let sent = {
                        let mut s = serial.lock().unwrap_or_else(|p| p.into_inner());
                        s.0.enqueue_raw_bytes(pending).unwrap_or(0)
                    };
                    pending = &pending[sent..];
                    if !pending.is_empty() {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
            }
        });
    if let Err(e) = r {
        debug!("no stdin reader thread: {e}");
    }
}
