//! What evroute's dom0 tools share: the doors into Xen (`/dev/xen/privcmd`,
//! `/dev/xen/evtchn`) and what Linux shows of its interrupts. Used by
//! `evroute-e2e` (the booted tests) and `evtchnctl` (the operators' CLI).

pub mod linux;
pub mod xen;
