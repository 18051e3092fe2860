//! zvisor's container layer: the OCI runtime (`zvisor-runc`), and later the
//! guest agent and tenant sandboxes.
