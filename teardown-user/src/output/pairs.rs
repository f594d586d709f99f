//! Both ends of a connection on this host, brought together: the end whose timeline comes
//! out first is held until its peer's does (`-x`, `--mermaid`).

use std::collections::{HashMap, VecDeque};

use crate::reconstruct::Timeline;

#[derive(Default)]
pub struct Pairs {
    /// First ends, waiting for their peer, by id; bounded.
    waiting: HashMap<u64, Timeline>,
    order: VecDeque<u64>,
}

impl Pairs {
    const MAX_WAITING: usize = 4096;

    /// For a timeline whose peer is on this host: the peer's timeline if it came out
    /// before, else `None` (and `t` is held). The oldest end held goes to `evicted` when
    /// too many wait.
    pub fn offer(&mut self, t: &Timeline, evicted: &mut dyn FnMut(Timeline)) -> Option<Timeline> {
        let peer = t.peer?;
        if let Some(first) = self.waiting.remove(&peer.id) {
            return Some(first);
        }
        if self.order.len() >= Self::MAX_WAITING {
            if let Some(old) = self
                .order
                .pop_front()
                .and_then(|id| self.waiting.remove(&id))
            {
                evicted(old);
            }
        }
        self.order.push_back(t.id);
        self.waiting.insert(t.id, t.clone());
        None
    }

    /// The ends still waiting (their peer was filtered out or never closed), oldest first.
    pub fn into_waiting(mut self) -> impl Iterator<Item = Timeline> {
        self.order
            .into_iter()
            .filter_map(move |id| self.waiting.remove(&id))
    }
}
