//! Widget long polls held open at once: at most [`MAX_POLLS`] per gateway, of which at most
//! [`MAX_POLLS_PER_SESSION`] for one session token and [`MAX_POLLS_PER_USER`] for one end user
//! of a channel (all their sessions together), so one session or user cannot hold every slot.
//! A poll's slot is freed when its request ends (answered, timed out, or dropped with its
//! connection).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Widget long polls one gateway holds open at once.
pub const MAX_POLLS: usize = 256;
/// Long polls one session token may hold open at once (a page and a second tab).
pub const MAX_POLLS_PER_SESSION: usize = 2;
/// Long polls one end user of a channel may hold open at once, over all their sessions.
pub const MAX_POLLS_PER_USER: usize = 4;
/// Polls one end user of a channel may start per second, after [`POLL_BURST`] (a token
/// bucket per user and gateway replica; a poll is charged once its session token is checked).
pub const POLL_RATE_PER_SECOND: f64 = 1.0;
/// Polls one end user may start in a burst.
pub const POLL_BURST: f64 = 10.0;

/// Which cap a poll met.
#[derive(Debug, PartialEq, Eq)]
pub enum PollCap {
    Session,
    User,
    Gateway,
}

/// The open polls by session and by user.
#[derive(Default, Debug)]
pub struct PollCounts {
    sessions: HashMap<String, usize>,
    users: HashMap<String, usize>,
}

impl PollCounts {
    /// Counts one more poll of `session` by `user`, unless a cap is reached.
    pub fn try_open(&mut self, session: &str, user: &str) -> Result<(), PollCap> {
        if self.sessions.get(session).copied().unwrap_or(0) >= MAX_POLLS_PER_SESSION {
            return Err(PollCap::Session);
        }
        if self.users.get(user).copied().unwrap_or(0) >= MAX_POLLS_PER_USER {
            return Err(PollCap::User);
        }
        *self.sessions.entry(session.to_string()).or_default() += 1;
        *self.users.entry(user.to_string()).or_default() += 1;
        Ok(())
    }

    /// Counts one poll of `session` by `user` less (the maps keep only open polls).
    pub fn close(&mut self, session: &str, user: &str) {
        for (map, key) in [(&mut self.sessions, session), (&mut self.users, user)] {
            if let Some(n) = map.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    map.remove(key);
                }
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty() && self.users.is_empty()
    }
}

/// The gateway's open polls.
#[derive(Clone, Debug)]
pub struct Polls {
    slots: Arc<Semaphore>,
    counts: Arc<Mutex<PollCounts>>,
}

impl Default for Polls {
    fn default() -> Self {
        Polls {
            slots: Arc::new(Semaphore::new(MAX_POLLS)),
            counts: Arc::default(),
        }
    }
}

/// An open poll; its slot is freed on drop.
pub struct PollSlot {
    counts: Arc<Mutex<PollCounts>>,
    session: String,
    user: String,
    _slot: OwnedSemaphorePermit,
}

impl Drop for PollSlot {
    fn drop(&mut self) {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .close(&self.session, &self.user);
    }
}

impl Polls {
    /// A slot for a poll of `session` by `user`, or the cap it met.
    pub fn open(&self, session: &str, user: &str) -> Result<PollSlot, PollCap> {
        let slot = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| PollCap::Gateway)?;
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .try_open(session, user)?;
        Ok(PollSlot {
            counts: self.counts.clone(),
            session: session.to_string(),
            user: user.to_string(),
            _slot: slot,
        })
    }

    /// Polls open now.
    pub fn open_now(&self) -> usize {
        MAX_POLLS - self.slots.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_session_or_user_cannot_take_every_slot() {
        let mut c = PollCounts::default();
        for _ in 0..MAX_POLLS_PER_SESSION {
            assert_eq!(c.try_open("s1", "u"), Ok(()));
        }
        assert_eq!(c.try_open("s1", "u"), Err(PollCap::Session));
        for _ in MAX_POLLS_PER_SESSION..MAX_POLLS_PER_USER {
            assert_eq!(c.try_open("s2", "u"), Ok(()));
        }
        assert_eq!(c.try_open("s3", "u"), Err(PollCap::User), "the user's cap");
        assert_eq!(c.try_open("s4", "another user"), Ok(()));
        c.close("s1", "u");
        assert_eq!(
            c.try_open("s3", "u"),
            Ok(()),
            "a closed poll frees its place"
        );
        for (s, u) in [
            ("s1", "u"),
            ("s2", "u"),
            ("s2", "u"),
            ("s3", "u"),
            ("s4", "another user"),
        ] {
            c.close(s, u);
        }
        assert!(c.is_empty(), "{c:?}");
    }

    #[test]
    fn slots_are_freed_on_drop_and_the_gateway_cap_holds() {
        let polls = Polls::default();
        let slots: Vec<PollSlot> = (0..MAX_POLLS)
            .map(|i| polls.open(&format!("s{i}"), &format!("u{i}")).unwrap())
            .collect();
        assert!(matches!(polls.open("s", "u"), Err(PollCap::Gateway)));
        drop(slots);
        assert_eq!(polls.open_now(), 0);
        assert!(polls.counts.lock().unwrap().is_empty());
        let a = polls.open("s", "u").unwrap();
        let b = polls.open("s", "u").unwrap();
        assert!(matches!(polls.open("s", "u"), Err(PollCap::Session)));
        drop(a);
        let _c = polls.open("s", "u").unwrap();
        drop(b);
    }
}
