//! Repositories, LifecyclePolicies and AccessPolicies in namespaces berth is not installed for
//! (`--namespaces`): nothing is done for them (they are not in the token service's index either,
//! so their paths accept nothing), and their status says why, `Ready=False`,
//! `NamespaceNotManaged`. Only berth's own objects are written; nothing in that namespace is.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::{NamespaceResourceScope, apimachinery::pkg::apis::meta::v1::Condition};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{Controller, WatchStreamExt, controller::Action, predicates, reflector, watcher},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::json;
use tokio::sync::watch;

use super::{Context, Error};
use crate::{conditions, namespaces::NOT_MANAGED};

pub const CONTROLLER: &str = "unmanaged";

/// The status for an object berth leaves alone, or `None` when it already says so.
pub fn status_for(
    kind: &str,
    namespace: &str,
    generation: Option<i64>,
    previous: &[Condition],
    scope: &crate::namespaces::Namespaces,
) -> Option<serde_json::Value> {
    let message = scope.refusal(namespace, &format!("this {kind}"))?;
    let current = conditions::find_ready(previous);
    if current.is_some_and(|c| {
        c.status == "False" && c.reason == NOT_MANAGED && c.message == message && c.observed_generation == generation
    }) {
        return None;
    }
    let conditions = conditions::merge(previous, conditions::ready(false, NOT_MANAGED, message, generation));
    Some(json!({"conditions": conditions, "observedGeneration": generation}))
}

async fn reconcile<K>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    if !ctx.leader.is_leader() {
        return Ok(Action::await_change());
    }
    let namespace = obj.namespace().unwrap_or_default();
    let previous: Vec<Condition> = serde_json::to_value(obj.as_ref())
        .ok()
        .and_then(|v| serde_json::from_value(v["status"]["conditions"].clone()).ok())
        .unwrap_or_default();
    let kind = K::kind(&());
    let Some(status) = status_for(&kind, &namespace, obj.meta().generation, &previous, &ctx.settings.namespaces) else {
        return Ok(Action::await_change());
    };
    let patch = json!({"apiVersion": K::api_version(&()), "kind": kind, "status": status});
    Api::<K>::namespaced(ctx.client.clone(), &namespace)
        .patch_status(&obj.name_any(), &PatchParams::apply("berth-status").force(), &Patch::Apply(patch))
        .await?;
    Ok(Action::await_change())
}

fn error_policy<K: Resource<DynamicType = ()>>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(kind = %K::kind(&()), object = %obj.name_any(), error = %error, "cannot report an unmanaged object");
    ctx.metrics
        .reconcile_errors
        .get_or_create(&crate::metrics::ErrorLabels { controller: CONTROLLER, reason: error.reason() })
        .inc();
    Action::requeue(ctx.failure_backoff(&format!("{CONTROLLER}/{}/{}", K::kind(&()), obj.name_any())))
}

/// Reports the objects of `api` outside `ctx.settings.namespaces` until shutdown; `gained`
/// fires when this replica becomes the leader.
pub async fn run<K>(
    ctx: Arc<Context>,
    api: Api<K>,
    gained: impl Stream<Item = ()> + Send + 'static,
    shutdown: watch::Receiver<bool>,
) where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let scope = ctx.settings.namespaces.clone();
    let (reader, writer) = reflector::store::<K>();
    let stream = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .filter(super::events_in(move |ns| !scope.allows(ns)))
        .modify(|o| o.managed_fields_mut().clear())
        .reflect(writer)
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());
    Controller::for_stream(stream, reader)
        .reconcile_all_on(gained)
        .graceful_shutdown_on(super::stopped(shutdown))
        .run(reconcile::<K>, error_policy::<K>, ctx)
        .for_each(|_| async {})
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::namespaces::Namespaces;

    #[test]
    fn an_object_outside_the_list_is_told_once_per_generation() {
        let scope = Namespaces::parse("berth-system,team-a").unwrap();
        assert_eq!(status_for("Repository", "team-a", Some(1), &[], &scope), None, "managed");
        assert_eq!(status_for("Repository", "x", Some(1), &[], &Namespaces::All), None, "cluster-wide");
        let status = status_for("Repository", "team-b", Some(1), &[], &scope).unwrap();
        let conditions: Vec<Condition> = serde_json::from_value(status["conditions"].clone()).unwrap();
        let ready = conditions::find_ready(&conditions).unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", NOT_MANAGED));
        assert!(ready.message.contains("this Repository is in namespace team-b"), "{}", ready.message);
        assert_eq!(status["observedGeneration"], 1);
        assert_eq!(status_for("Repository", "team-b", Some(1), &conditions, &scope), None, "already said");
        assert!(status_for("Repository", "team-b", Some(2), &conditions, &scope).is_some(), "a new generation");
    }
}
