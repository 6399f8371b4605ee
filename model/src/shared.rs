//! Owned storage for the pages a guest shares with Xen: the event array, one
//! control block per vCPU, and each vCPU's upcall flag.

use crate::abi::{ControlBlock, Port, SharedEvents};
use crate::sync::{AtomicU32, AtomicU8};

/// The shared pages of one domain. The model allocates exactly `nr_ports`
/// event words (the guest has expanded its event array that far); a port
/// past them has no word, as a port on an unmapped event-array page.
pub struct SharedPages {
    words: Box<[AtomicU32]>,
    control_blocks: Box<[ControlBlock]>,
    upcall: Box<[AtomicU8]>,
}

impl SharedPages {
    pub fn new(nr_vcpus: u32, nr_ports: u32) -> Self {
        SharedPages {
            words: (0..nr_ports).map(|_| AtomicU32::new(0)).collect(),
            control_blocks: (0..nr_vcpus).map(|_| ControlBlock::default()).collect(),
            upcall: (0..nr_vcpus).map(|_| AtomicU8::new(0)).collect(),
        }
    }

    pub fn nr_ports(&self) -> u32 {
        self.words.len() as u32
    }
}

impl SharedEvents for SharedPages {
    fn word(&self, port: Port) -> Option<&AtomicU32> {
        // Port 0 is never an event: a LINK of 0 means "end of queue".
        if port == 0 {
            return None;
        }
        self.words.get(port as usize)
    }

    fn control_block(&self, vcpu: u32) -> &ControlBlock {
        &self.control_blocks[vcpu as usize]
    }

    fn upcall_pending(&self, vcpu: u32) -> &AtomicU8 {
        &self.upcall[vcpu as usize]
    }
}
