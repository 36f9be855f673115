//! The live policy, swapped atomically on reload.

use std::sync::{Arc, PoisonError, RwLock};

use crate::engine::Engine;

/// The engine in force. Readers take an `Arc` snapshot per message, so a reload never changes
/// the policy under a call being evaluated.
#[derive(Debug)]
pub struct PolicyHandle {
    current: RwLock<Arc<Engine>>,
}

impl PolicyHandle {
    /// Starts with `engine`.
    pub fn new(engine: Engine) -> Self {
        Self {
            current: RwLock::new(Arc::new(engine)),
        }
    }

    /// The engine in force now.
    pub fn current(&self) -> Arc<Engine> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Puts `engine` in force for every later message.
    pub fn replace(&self, engine: Engine) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(engine);
    }
}
