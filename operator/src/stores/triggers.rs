//! How watch events become reconcile requests: one queue per controller ([`Triggers`]), the
//! owner a child's event wakes ([`controlling`]), and what of an object is news to its
//! controller ([`Seen`]: not its own status writes).

use std::collections::HashMap;
use std::hash::Hash;

use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};
use kube::Resource;
use kube::runtime::reflector::ObjectRef;
use xin_api::automation::AutomationRule;
use xin_api::channel::Channel;
use xin_api::ingestion::IngestionJob;
use xin_api::tenant::{Tenant, tenant_of_namespace};

/// Where watch events become reconcile requests, one queue per controller.
#[derive(Clone)]
pub struct Triggers {
    pub tenant: UnboundedSender<ObjectRef<Tenant>>,
    pub channel: UnboundedSender<ObjectRef<Channel>>,
    pub rule: UnboundedSender<ObjectRef<AutomationRule>>,
    pub ingestion: UnboundedSender<ObjectRef<IngestionJob>>,
}

/// The receiving ends of [`Triggers`], one per controller.
pub struct TriggerQueues {
    pub tenant: UnboundedReceiver<ObjectRef<Tenant>>,
    pub channel: UnboundedReceiver<ObjectRef<Channel>>,
    pub rule: UnboundedReceiver<ObjectRef<AutomationRule>>,
    pub ingestion: UnboundedReceiver<ObjectRef<IngestionJob>>,
}

impl Triggers {
    pub(super) fn new() -> (Self, TriggerQueues) {
        let (tenant, t) = unbounded();
        let (channel, c) = unbounded();
        let (rule, r) = unbounded();
        let (ingestion, i) = unbounded();
        (
            Triggers {
                tenant,
                channel,
                rule,
                ingestion,
            },
            TriggerQueues {
                tenant: t,
                channel: c,
                rule: r,
                ingestion: i,
            },
        )
    }

    /// The Tenant that owns namespace `ns`, if any.
    pub(super) fn tenant_of(&self, ns: Option<&str>) {
        if let Some(t) = ns.and_then(tenant_of_namespace) {
            let _ = self.tenant.unbounded_send(ObjectRef::new(t));
        }
    }
}

/// The Tenant that controls a child (`owns_stream` would key a cluster-scoped owner by the
/// child's namespace).
pub(super) fn controlling<O: Resource<DynamicType = ()>>(child: &impl Resource) -> Option<String> {
    child
        .meta()
        .owner_references
        .iter()
        .flatten()
        .find(|o| {
            o.controller == Some(true)
                && o.kind == O::kind(&())
                && o.api_version == O::api_version(&())
        })
        .map(|o| o.name.clone())
}

/// Remembers, per object, what of it a controller acts on: the spec (`generation`), the
/// metadata users steer with (labels, annotations, finalizers, deletion) and the uid (a
/// re-created object with the same generation is new). A status-only change is not news.
#[derive(Default)]
pub(super) struct Seen(HashMap<(Option<String>, String), u64>);

impl Seen {
    /// Whether `o` differs from when it was last seen; `gone` forgets it.
    pub(super) fn changed<K: Resource>(&mut self, o: &K, gone: bool) -> bool {
        self.changed_with(o, gone, ())
    }

    /// [`Seen::changed`], with `more` (a part of the status the controller acts on) too.
    pub(super) fn changed_with<K: Resource>(&mut self, o: &K, gone: bool, more: impl Hash) -> bool {
        use std::hash::Hasher;
        let m = o.meta();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (
            &m.uid,
            m.generation,
            &m.labels,
            &m.annotations,
            &m.finalizers,
            m.deletion_timestamp.as_ref().map(|t| t.0.as_second()),
            more,
        )
            .hash(&mut h);
        let key = (m.namespace.clone(), m.name.clone().unwrap_or_default());
        if gone {
            self.0.remove(&key);
            return false;
        }
        self.0.insert(key, h.finish()) != Some(h.finish())
    }
}
