//! One controller runner for the four kinds: wiring, the reconcile's span and timing, the
//! status step, stall reporting and the requeue policy are written once here, so every kind
//! behaves the same way.
//!
//! A kind implements [`Reconcile`]: its pipeline (resolve → validate → build → apply) returns
//! a [`Pass`] — the status fields it owns, its health and when to look again — or an
//! [`Error`]. The runner then
//! - turns a user-fixable error into a `Stalled` pass (reason from the error), with one Warning
//!   Event per distinct problem and a retry with backoff;
//! - shows any other error as `Reconciling` with reason `ApiError` and retries (soon when the
//!   API server throttled, with backoff otherwise);
//! - merges the conditions (keeping `lastTransitionTime` when nothing changed), compares the
//!   typed status with the current one and patches only on a difference;
//! - records the reconcile's duration after the status patch, and counts failures by kind and
//!   error label.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::channel::mpsc::UnboundedReceiver;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{Instrument, debug, info_span, warn};

use super::{Context, key};
use crate::builders::MANAGER;
use crate::conditions::Health;
use crate::error::{Error, Result, StatusError, object_name};

mod pass;
pub(crate) use pass::status_fields;
pub use pass::*;

/// A kind the operator reconciles.
pub trait Reconcile:
    Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug + Send + Sync + 'static
{
    /// Its typed status, holding only the fields this operator writes (others, such as a
    /// worker's counters, stay `None` and are left to their own field manager).
    type Status: Serialize + Clone + PartialEq + Debug + Send + Sync + 'static;

    /// The part of the current status this operator owns.
    fn owned_status(&self) -> Self::Status;
    fn conditions(status: &Self::Status) -> &[Condition];
    fn conditions_mut(status: &mut Self::Status) -> &mut Vec<Condition>;
    fn observed_generation_mut(status: &mut Self::Status) -> &mut Option<i64>;

    /// The owned status as it is, observed at the current generation: what a pass that
    /// learned nothing new reports.
    fn current_status(&self) -> Self::Status {
        let mut s = self.owned_status();
        *Self::observed_generation_mut(&mut s) = self.meta().generation;
        s
    }
    /// The store of this kind (for the controller's lookups).
    fn store(ctx: &Context) -> Store<Self>;
    /// The API of this kind for an object in `namespace` (ignored when cluster-scoped).
    fn api(client: kube::Client, namespace: &str) -> Api<Self>;

    /// One pass of the pipeline.
    fn reconcile(
        obj: Arc<Self>,
        ctx: Arc<Context>,
    ) -> impl Future<Output = Result<Pass<Self::Status>>> + Send;

    /// The pass shown when the reconcile failed with an error that is not the user's: the
    /// current status, `Reconciling` with reason `ApiError`.
    fn error_pass(&self, e: &Error) -> Pass<Self::Status> {
        api_error_pass(self, e)
    }
}

/// Server-side applies `status` as this operator's field manager. Fields the operator no
/// longer sets (absent from the typed status) are removed by the apply.
pub async fn patch_status<K: Reconcile>(
    api: &Api<K>,
    obj: &K,
    status: &K::Status,
) -> Result<(), StatusError> {
    let status = serde_json::to_value(status).map_err(StatusError::Serialize)?;
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(StatusError::Kube)?;
    Ok(())
}

fn api_for<K: Reconcile>(ctx: &Context, obj: &K) -> Api<K> {
    K::api(ctx.client.clone(), &obj.namespace().unwrap_or_default())
}

/// The status step: the conditions, the Events, the status patch, and the action.
async fn finish<K: Reconcile>(
    obj: &K,
    ctx: &Context,
    pass: Pass<K::Status>,
    succeeded: bool,
) -> Result<Action> {
    let k = key(obj);
    let now = ctx.now();
    // One Warning Event per distinct problem: compared with what `Ready` already shows.
    if let Health::Stalled { reason, message } = &pass.health {
        let current = obj.owned_status();
        let shown = K::conditions(&current)
            .iter()
            .find(|c| c.type_ == xin_api::common::condition::READY);
        if !shown.is_some_and(|c| c.reason == *reason && c.message == *message) {
            ctx.event(
                obj.object_ref(&()),
                EventType::Warning,
                reason,
                message.clone(),
                "Reconcile",
            )
            .await;
        }
    }
    for n in &pass.events {
        let t = if n.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        ctx.event(
            obj.object_ref(&()),
            t,
            n.reason,
            n.message.clone(),
            n.action,
        )
        .await;
    }
    if let Some(status) = desired_status(obj, &pass, &now) {
        patch_status(&api_for(ctx, obj), obj, &status)
            .await
            .map_err(|e| Error::new(object_name(obj), e))?;
    }
    let stalled = matches!(pass.health, Health::Stalled { .. });
    // The backoff grows while the object is stalled or failing, and starts over once a pass
    // succeeds without a problem.
    if succeeded && !stalled {
        ctx.reset_backoff(&k);
    }
    Ok(match (&pass.health, pass.requeue) {
        // Final (a failed Job): nothing to retry.
        (_, Requeue::AwaitChange) => Action::await_change(),
        (Health::Stalled { reason, .. }, _) => Action::requeue(ctx.retry_after(reason, &k)),
        (_, r) => match r {
            Requeue::Resync => Action::requeue(Duration::from_secs(ctx.config.resync_seconds)),
            Requeue::After(d) => Action::requeue(d),
            Requeue::AwaitChange => Action::await_change(),
        },
    })
}

/// One reconcile of `obj`, as the controller runs it.
async fn reconcile<K: Reconcile>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action> {
    let start = Instant::now();
    let res = match K::reconcile(obj.clone(), ctx.clone()).await {
        Ok(pass) => finish(obj.as_ref(), &ctx, pass, true).await,
        Err(e) if e.user_fixable() => {
            finish(
                obj.as_ref(),
                &ctx,
                Pass::stalled(obj.current_status(), &e),
                true,
            )
            .await
        }
        Err(e) => {
            if !e.is_transient() {
                // Visible where users look, not only in the operator's logs.
                if let Err(se) = finish(obj.as_ref(), &ctx, obj.error_pass(&e), false).await {
                    debug!(error = %se, "could not show the error in the status");
                }
            }
            Err(e)
        }
    };
    // Logged here, inside the reconcile's span, so the line carries its trace id.
    if let Err(e) = &res {
        warn!(error = %e, error_kind = e.metric_label(), "reconcile failed");
    }
    ctx.metrics
        .reconciled(K::kind(&()).as_ref(), start.elapsed());
    res
}

/// The error policy of every controller: count the failure by kind and error, log it, and
/// retry — soon when the API server only asked us to slow down, with backoff otherwise.
fn error_policy<K: Reconcile>(obj: Arc<K>, err: &Error, ctx: Arc<Context>) -> Action {
    let kind = K::kind(&()).to_string();
    ctx.metrics.failed(&kind, err.metric_label());
    let delay = if err.is_transient() {
        Duration::from_millis(500 + u64::from(rand::random::<u16>() % 1500))
    } else {
        ctx.backoff(&key(obj.as_ref()))
    };
    debug!(kind, name = %obj.name_any(), namespace = obj.namespace().unwrap_or_default(), retry_in_s = delay.as_secs(), "reconcile failed; retrying");
    Action::requeue(delay)
}

/// Runs the controller of `K` until shutdown: reconciles what `triggers` names (every watch
/// event that concerns a `K`, see `stores`), at most `XIN_CONCURRENCY` at once.
pub async fn run<K: Reconcile>(ctx: Arc<Context>, triggers: UnboundedReceiver<ObjectRef<K>>) {
    let kind = K::kind(&()).to_string();
    Controller::for_stream(futures::stream::pending(), K::store(&ctx))
        .reconcile_on(triggers)
        .with_config(
            kube::runtime::controller::Config::default().concurrency(ctx.config.concurrency),
        )
        .shutdown_on_signal()
        .run(
            |obj: Arc<K>, ctx: Arc<Context>| {
                // Each reconcile is a trace of its own (under kube-runtime's `reconciling
                // object` span, the root); its id is in every log line of the pass, and the
                // spans go to the OTLP collector when one is set.
                let span = info_span!(
                    "reconcile",
                    kind = K::kind(&()).as_ref(),
                    name = %obj.name_any(),
                    namespace = obj.namespace().unwrap_or_default(),
                    trace_id = tracing::field::Empty,
                );
                if let Some(id) = xin_runtime::trace_id(&span) {
                    span.record("trace_id", id);
                }
                reconcile(obj, ctx).instrument(span)
            },
            error_policy,
            ctx,
        )
        .for_each(|res| {
            use kube::runtime::controller::Error as CErr;
            match res {
                // A trigger for an object that is gone: nothing to do.
                Err(CErr::ObjectNotFound(r)) => debug!(kind, object = %r, "object already gone"),
                Err(e) => warn!(kind, error = %e, "controller event failed"),
                Ok(_) => {}
            }
            std::future::ready(())
        })
        .await;
}
