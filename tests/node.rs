//! The test node itself: pods are scheduled, pull, run, resolve Services by name and reach the
//! API server through the `kubernetes` Service, as in any cluster. The other node tests build on
//! this; when it fails, look here first.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, api::PostParams};
use serde_json::json;
use support::{OciLayout, control_plane_with_node, eventually, node::busybox_image};

#[tokio::test]
async fn a_pod_runs_on_the_node_and_finds_services_by_name() {
    let Some(cluster) = control_plane_with_node().await else { return };
    let ns = cluster.cp.namespace("node-smoke").await;
    let mut layout = OciLayout::default();
    busybox_image(
        &mut layout,
        "v1",
        "v1",
        &["/bin/sh", "-c", "cat /etc/version; nslookup kubernetes.default.svc.cluster.local; exec sleep 3600"],
    );
    cluster.import_image(layout.path(), "v1", "localhost/berth-test/busybox:v1");

    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "smoke"},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "image": "localhost/berth-test/busybox:v1", "imagePullPolicy": "Never",
                "securityContext": {"readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}],
        },
    }))
    .unwrap();
    let pods = Api::<Pod>::namespaced(ns.client.clone(), &ns.name);
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let ip = eventually(Duration::from_secs(60), "the pod runs", || async {
        let p = pods.get("smoke").await.map_err(|e| e.to_string())?;
        let status = p.status.clone().unwrap_or_default();
        match (status.phase.as_deref(), status.pod_ip) {
            (Some("Running"), Some(ip)) => Ok(ip),
            _ => Err(format!("{:?}", p.status)),
        }
    })
    .await;
    assert!(ip.starts_with("10.88."), "pod IP {ip} is on the node's pod network");
    let logs = eventually(Duration::from_secs(30), "the pod resolved the kubernetes Service", || async {
        let logs = pods.logs("smoke", &Default::default()).await.map_err(|e| e.to_string())?;
        if logs.contains("10.0.0.1") { Ok(logs) } else { Err(logs) }
    })
    .await;
    assert!(logs.starts_with("v1\n"), "{logs}");
}
