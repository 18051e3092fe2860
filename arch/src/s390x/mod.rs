//! The s390x backend.
//!
//! Pure-logic modules will live here and be tested on every host. There is
//! no KVM glue yet: on an s390x host `HostPlatform` is
//! [`crate::unsupported::Unsupported`].
