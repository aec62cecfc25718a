//! The namespace's AutomationRules, from a kube-runtime reflector (the worker's Role allows
//! `get`, `list`, `watch`): adds, edits, deletes and `suspend` take effect without a restart.
//! Every change wakes the loops waiting on [`Rules::changed`]; deletions are remembered until
//! the queue has forgotten the rule ([`Rules::take_deleted`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use tokio::sync::Notify;
use xin_api::automation::AutomationRule;

#[derive(Clone)]
pub struct Rules {
    store: Store<AutomationRule>,
    changed: Arc<Notify>,
    deleted: Arc<Mutex<Vec<String>>>,
    listed: Arc<AtomicBool>,
    /// The watch's last word was not an error.
    watching: Arc<AtomicBool>,
}

impl Rules {
    /// Starts watching the rules of `api`'s namespace; the task ends with the process.
    pub fn watch(api: Api<AutomationRule>) -> (Rules, tokio::task::JoinHandle<()>) {
        let (store, writer) = reflector::store();
        let changed = Arc::new(Notify::new());
        let deleted = Arc::new(Mutex::new(Vec::new()));
        let listed = Arc::new(AtomicBool::new(false));
        let watching = Arc::new(AtomicBool::new(false));
        let rules = Rules {
            store,
            changed: changed.clone(),
            deleted: deleted.clone(),
            listed: listed.clone(),
            watching: watching.clone(),
        };
        // What a change is: the spec, annotations, deletion — not the status the worker itself
        // writes (waking the reporter on its own writes would make it write again at once).
        let mut seen: std::collections::HashMap<String, u64> = Default::default();
        let mut news = move |r: &AutomationRule| {
            use std::hash::{Hash, Hasher};
            let m = &r.metadata;
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (m.generation, &m.annotations, m.deletion_timestamp.is_some()).hash(&mut h);
            seen.insert(r.uid().unwrap_or_default(), h.finish()) != Some(h.finish())
        };
        let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
            .default_backoff()
            .for_each(move |ev| {
                watching.store(ev.is_ok(), Ordering::Relaxed);
                match &ev {
                    Ok(watcher::Event::Delete(r)) => {
                        if let Some(uid) = r.uid() {
                            deleted.lock().unwrap_or_else(|e| e.into_inner()).push(uid);
                        }
                        changed.notify_waiters();
                    }
                    Ok(watcher::Event::InitDone) => {
                        listed.store(true, Ordering::Relaxed);
                        changed.notify_waiters()
                    }
                    Ok(watcher::Event::Apply(r)) => {
                        if news(r) {
                            changed.notify_waiters()
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "watching AutomationRules failed; retrying")
                    }
                }
                async {}
            });
        (rules, tokio::spawn(stream))
    }

    /// A fixed set of rules, never watched (benchmarks).
    pub fn fixed(rules: Vec<AutomationRule>) -> Rules {
        let (store, mut writer) = reflector::store();
        writer.apply_watcher_event(&watcher::Event::Init);
        for r in rules {
            writer.apply_watcher_event(&watcher::Event::InitApply(r));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        Rules {
            store,
            changed: Arc::new(Notify::new()),
            deleted: Arc::default(),
            listed: Arc::new(AtomicBool::new(true)),
            watching: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Resolves once the first list is in.
    pub async fn ready(&self) {
        let _ = self.store.wait_until_ready().await;
    }

    /// The watch is live (its last word was not an error): events may be matched against
    /// these rules. While it is not, a rule created meanwhile could be missing.
    pub fn watching(&self) -> bool {
        self.watching.load(Ordering::Relaxed)
    }

    pub fn is_ready(&self) -> bool {
        self.listed.load(Ordering::Relaxed)
    }

    /// Resolves at the next change (or never, until one).
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// Every rule not being deleted.
    pub fn all(&self) -> Vec<Arc<AutomationRule>> {
        self.store
            .state()
            .into_iter()
            .filter(|r| r.metadata.deletion_timestamp.is_none() && r.uid().is_some())
            .collect()
    }

    /// The rule with `uid`.
    pub fn by_uid(&self, uid: &str) -> Option<Arc<AutomationRule>> {
        self.all()
            .into_iter()
            .find(|r| r.uid().as_deref() == Some(uid))
    }

    /// UIDs of the rules whose runs may run now (not suspended).
    pub fn active_uids(&self) -> Vec<String> {
        self.all()
            .iter()
            .filter(|r| !r.spec.suspend)
            .filter_map(|r| r.uid())
            .collect()
    }

    /// UIDs of every rule.
    pub fn uids(&self) -> Vec<String> {
        self.all().iter().filter_map(|r| r.uid()).collect()
    }

    /// The UIDs of rules deleted since the last call.
    pub fn take_deleted(&self) -> Vec<String> {
        std::mem::take(&mut *self.deleted.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Puts back UIDs a failed cleanup did not forget.
    pub fn return_deleted(&self, uids: Vec<String>) {
        self.deleted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(uids);
    }
}
