//! Smoke suite for the local control plane: the controllers, scheduler, kwok stages and API
//! validation the operator's suites rely on all work. Every test uses its own namespace or
//! CRD group, so the tests run in parallel and rerun against the same cluster.

use std::time::Duration;

use xin_e2e::*;

const MINUTE: Duration = Duration::from_secs(60);

fn pods_in_phase(ns: &str, selector: &str, phase: &str) -> Result<usize, String> {
    let pods = get_json(&["pods", "-n", ns, "-l", selector]).ok_or("no pod list")?;
    let items = pods["items"].as_array().cloned().unwrap_or_default();
    let phases: Vec<&str> = items.iter().map(|p| str_at(p, "/status/phase")).collect();
    match phases.iter().filter(|p| **p == phase).count() {
        0 => Err(format!("no pod {phase}; phases {phases:?}")),
        n => Ok(n),
    }
}

fn deployment(ns: &str, name: &str, replicas: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {ns}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
      - name: main
        image: registry.invalid/xin/smoke:1
        resources: {{requests: {{cpu: 100m, memory: 32Mi}}}}
"#
    )
}

#[test]
fn deployment_with_two_replicas_gets_two_running_pods_on_fake_nodes() {
    let ns = TestNamespace::create("smoke-deploy");
    apply(&deployment(&ns.name, "web", 2));

    let running = wait_until("2 Running pods", 2 * MINUTE, || {
        pods_in_phase(&ns.name, "app=web", "Running").and_then(|n| {
            if n == 2 {
                Ok(n)
            } else {
                Err(format!("{n} Running"))
            }
        })
    });
    assert_eq!(running, 2);

    // The scheduler bound them to kwok's nodes, and the Deployment counts them available.
    let pods = get_json(&["pods", "-n", &ns.name, "-l", "app=web"]).unwrap();
    for pod in pods["items"].as_array().unwrap() {
        assert!(
            str_at(pod, "/spec/nodeName").starts_with("xin-node-"),
            "pod not bound to a fake node: {pod}"
        );
    }
    let available = wait_until("Deployment Available", MINUTE, || {
        let d = get_json(&["deployment", "web", "-n", &ns.name]).ok_or("gone")?;
        match d
            .pointer("/status/availableReplicas")
            .and_then(Value::as_u64)
        {
            Some(2) => Ok(2),
            other => Err(format!("availableReplicas {other:?}")),
        }
    });
    assert_eq!(available, 2);
}

#[test]
fn job_runs_to_completion() {
    let ns = TestNamespace::create("smoke-job");
    kubectl_ok(&[
        "create",
        "job",
        "once",
        "-n",
        &ns.name,
        "--image=registry.invalid/xin/smoke:1",
    ]);
    let job = wait_until("Job Complete", 2 * MINUTE, || {
        let job = get_json(&["job", "once", "-n", &ns.name]).ok_or("gone")?;
        match condition_status(&job, "Complete") {
            Some("True") => Ok(job),
            other => Err(format!("Complete={other:?} status={}", job["status"])),
        }
    });
    assert_eq!(
        job.pointer("/status/succeeded").and_then(Value::as_u64),
        Some(1)
    );
    assert_eq!(
        job.pointer("/status/failed"),
        None,
        "no pod should have failed: {}",
        job["status"]
    );
    assert!(pods_in_phase(&ns.name, "job-name=once", "Succeeded").unwrap() >= 1);
}

#[test]
fn hpa_is_accepted_and_picked_up_by_its_controller() {
    let ns = TestNamespace::create("smoke-hpa");
    apply(&deployment(&ns.name, "api", 1));
    apply(&format!(
        r#"apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {{name: api, namespace: {ns}}}
spec:
  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: api}}
  minReplicas: 1
  maxReplicas: 3
  metrics:
  - type: Resource
    resource: {{name: cpu, target: {{type: Utilization, averageUtilization: 80}}}}
"#,
        ns = ns.name
    ));
    // The HPA controller reports on it: AbleToScale is set once it has read the target's
    // scale subresource (there is no metrics API here, so ScalingActive stays False).
    let hpa = wait_until("HPA conditions from its controller", 2 * MINUTE, || {
        let hpa = get_json(&["hpa", "api", "-n", &ns.name]).ok_or("gone")?;
        match condition_status(&hpa, "AbleToScale") {
            Some("True") => Ok(hpa),
            other => Err(format!("AbleToScale={other:?} status={}", hpa["status"])),
        }
    });
    assert_eq!(str_at(&hpa, "/spec/scaleTargetRef/name"), "api");
}

#[test]
fn crd_validation_rule_refuses_an_invalid_object_with_its_message() {
    let group = format!("{}.smoke.xin.dev", unique_name("g"));
    let crd = format!(
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: widgets.{group}}}
spec:
  group: {group}
  scope: Namespaced
  names: {{plural: widgets, singular: widget, kind: Widget}}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            x-kubernetes-validations:
            - rule: self.minReplicas <= self.maxReplicas
              message: minReplicas must not exceed maxReplicas
            properties:
              minReplicas: {{type: integer}}
              maxReplicas: {{type: integer}}
"#
    );
    apply(&crd);
    xin_e2e::wait_crds_established(&[&format!("widgets.{group}")]);
    let ns = TestNamespace::create("smoke-crd");
    let widget = |name: &str, min: u32, max: u32| {
        format!(
            "apiVersion: {group}/v1\nkind: Widget\nmetadata: {{name: {name}, namespace: {}}}\nspec: {{minReplicas: {min}, maxReplicas: {max}}}\n",
            ns.name
        )
    };

    let refused = kubectl_stdin(&["apply", "-f", "-"], Some(&widget("bad", 5, 2)));
    assert!(
        !refused.ok,
        "an invalid Widget was accepted: {}",
        refused.stdout
    );
    assert!(
        refused
            .stderr
            .contains("minReplicas must not exceed maxReplicas"),
        "refusal without the rule's message: {}",
        refused.stderr
    );
    let kind = format!("widgets.{group}");
    assert!(
        get_json(&[&kind, "bad", "-n", &ns.name]).is_none(),
        "the refused Widget exists"
    );

    apply(&widget("good", 1, 2));
    let good = get_json(&[&kind, "good", "-n", &ns.name]).expect("good Widget stored");
    assert_eq!(
        good.pointer("/spec/maxReplicas").and_then(Value::as_u64),
        Some(2)
    );

    kubectl_ok(&["delete", "crd", &format!("widgets.{group}"), "--wait=false"]);
}

#[test]
fn deleting_a_namespace_removes_it_and_its_objects() {
    let ns = TestNamespace::create("smoke-gc");
    apply(&deployment(&ns.name, "doomed", 1));
    wait_until("a Running pod", 2 * MINUTE, || {
        pods_in_phase(&ns.name, "app=doomed", "Running")
    });

    // The garbage collector follows owner references: Deployment → ReplicaSet → Pod.
    kubectl_ok(&[
        "delete",
        "deployment",
        "doomed",
        "-n",
        &ns.name,
        "--cascade=background",
    ]);
    wait_until(
        "the ReplicaSet and pods to be collected",
        2 * MINUTE,
        || {
            let rs = get_json(&["replicasets", "-n", &ns.name]).ok_or("no list")?;
            let pods = get_json(&["pods", "-n", &ns.name]).ok_or("no list")?;
            let (r, p) = (
                rs["items"].as_array().map_or(0, Vec::len),
                pods["items"].as_array().map_or(0, Vec::len),
            );
            if r == 0 && p == 0 {
                Ok(())
            } else {
                Err(format!("{r} ReplicaSets, {p} pods left"))
            }
        },
    );

    apply(&deployment(&ns.name, "second", 1));
    kubectl_ok(&[
        "create",
        "configmap",
        "data",
        "-n",
        &ns.name,
        "--from-literal=k=v",
    ]);
    kubectl_ok(&["delete", "namespace", &ns.name, "--wait=false"]);
    wait_until("the namespace to go", 3 * MINUTE, || {
        match get_json(&["namespace", &ns.name]) {
            None => Ok(()),
            Some(n) => Err(format!("phase {}", str_at(&n, "/status/phase"))),
        }
    });
    assert!(get_json(&["configmap", "data", "-n", &ns.name]).is_none());
}
