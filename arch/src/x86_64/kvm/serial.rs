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
pub struct SerialDevice {
    uart: Serial<IrqTrigger, NoEvents, Box<dyn Write + Send>>,
    /// The line control register, to tell IER from the divisor latch.
    lcr: u8,
    /// The guest has the received-data interrupt on.
    rx_irq: bool,
    /// The guest has the FIFOs on.
    fifo_on: bool,
}

const IER: u64 = 1;
const FCR: u64 = 2;
const LCR: u64 = 3;
const FCR_ENABLE_FIFO: u8 = 0x01;
const LCR_DLAB: u8 = 0x80;
const IER_RDI: u8 = 0x01;

impl SerialDevice {
    /// A serial port that raises `irq` and writes to stdout (or nowhere).
    pub fn new(irq: EventFd, console: ConsoleMode) -> Self {
        let out: Box<dyn Write + Send> = match console {
            ConsoleMode::Native => Box::new(std::io::stdout()),
            ConsoleMode::Off => Box::new(std::io::sink()),
        };
        SerialDevice {
            uart: Serial::new(IrqTrigger(irq), out),
            lcr: 0,
            rx_irq: false,
            fifo_on: false,
        }
    }
}

impl SerialDevice {
    /// The guest's driver has the port open: FIFOs and the received-data
    /// interrupt on (Linux's 8250 driver sets both once it has started the
    /// port; probing and console writes toggle them one at a time).
    fn rx_ready(&self) -> bool {
        self.rx_irq && self.fifo_on
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        data[0] = self.uart.read(offset as u8);
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some(&v) = data.first() {
            match offset {
                LCR => self.lcr = v,
                IER if self.lcr & LCR_DLAB == 0 => self.rx_irq = v & IER_RDI != 0,
                FCR => self.fifo_on = v & FCR_ENABLE_FIFO != 0,
                _ => {}
            }
            if let Err(e) = self.uart.write(offset as u8, v) {
                debug!("serial write: {e}");
            }
        }
    }
}

/// Feeds stdin into the serial port's receive FIFO from a thread. Bytes
/// wait (they are not dropped) while the guest has not drained the FIFO, and
/// until the guest's driver has opened the port: Linux's 8250 driver reads
/// (and so would lose) whatever is in the FIFO while it probes and starts
/// the port.
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
                        if s.rx_ready() {
                            s.uart.enqueue_raw_bytes(pending).unwrap_or(0)
                        } else {
                            0
                        }
                    };
                    pending = &pending[sent..];
                    if !pending.is_empty() {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
        });
    if let Err(e) = r {
        debug!("no stdin reader thread: {e}");
    }
}
