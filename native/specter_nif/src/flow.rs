//! `:gen_tcp`-style delivery credit (`active: true | false | :once | n`), shared by data
//! channels and remote tracks.

use std::sync::Mutex;

use rustler::Term;

use crate::atoms;
use crate::error::{Error, NifResult};
use specter_core::registry::lock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Active {
    Passive,
    Once,
    Count(i64),
    Always,
}

impl Active {
    pub fn has_credit(self) -> bool {
        !matches!(self, Active::Passive)
    }

    pub fn from_setting(setting: &crate::config::ActiveSetting) -> Self {
        use crate::config::ActiveSetting;
        match setting {
            ActiveSetting::Flag(true) => Active::Always,
            ActiveSetting::Flag(false) => Active::Passive,
            ActiveSetting::Count(n) if *n > 0 => Active::Count(*n),
            ActiveSetting::Mode(a) if *a == atoms::once() => Active::Once,
            _ => Active::Always,
        }
    }

    /// Decodes `true`, `false`, `:once` or a positive count.
    pub fn decode(term: Term<'_>) -> NifResult<Self> {
        if let Ok(b) = term.decode::<bool>() {
            return Ok(if b { Active::Always } else { Active::Passive });
        }
        if let Ok(a) = term.decode::<rustler::Atom>() {
            if a == atoms::once() {
                return Ok(Active::Once);
            }
        }
        match term.decode::<i64>() {
            Ok(n) if (1..=i64::from(i32::MAX)).contains(&n) => Ok(Active::Count(n)),
            _ => Err(Error::InvalidOption("active".into())),
        }
    }
}

/// The credit of one receiver.
pub struct Credit(Mutex<Active>);

impl Credit {
    pub fn new(active: Active) -> Self {
        Self(Mutex::new(active))
    }

    pub fn has(&self) -> bool {
        lock(&self.0).has_credit()
    }

    /// Sets the mode; counts add up, as with `:inet.setopts(socket, active: n)`.
    pub fn set(&self, next: Active) {
        let mut current = lock(&self.0);
        *current = match (*current, next) {
            (Active::Count(a), Active::Count(b)) => Active::Count(a.saturating_add(b)),
            (_, next) => next,
        };
    }

    /// Takes one unit of credit, if there is any; `Some(true)` when a count ran out with it.
    pub fn take(&self) -> Option<bool> {
        let mut active = lock(&self.0);
        match *active {
            Active::Passive => None,
            Active::Always => Some(false),
            Active::Once => {
                *active = Active::Passive;
                Some(false)
            }
            Active::Count(n) if n <= 1 => {
                *active = Active::Passive;
                Some(true)
            }
            Active::Count(n) => {
                *active = Active::Count(n - 1);
                Some(false)
            }
        }
    }
}
