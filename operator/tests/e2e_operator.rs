//! The operator against the local control plane, driven with kubectl as a user would.
//! One operator process serves every test of this file; each test uses its own Tenant.

mod common;

use std::sync::OnceLock;

use common::*;

fn operator() -> &'static OperatorProcess {
    static OP: OnceLock<OperatorProcess> = OnceLock::new();
    OP.get_or_init(|| OperatorProcess::start(OPERATOR, &[]))
}

#[test]
fn examples_become_ready_with_owned_children() {
    operator();
    let _examples = Examples::apply();

    for t in ["acme", "globex"] {
        ready("tenant", t, "");
    }
    for (ns, ch) in [
        ("xin-acme", "web"),
        ("xin-acme", "telegram"),
        ("xin-globex", "whatsapp"),
        ("xin-globex", "instagram"),
    ] {
        let c = ready("channel", ch, ns);
        assert_eq!(str_at(&c, "/status/webhookPath"), format!("/webhooks/{ch}"));
        assert_eq!(
            str_at(&c, "/status/webhookSecretName"),
            format!("{ch}-webhook")
        );
        // The status names the Secret, never a key.
        let key = secret_value(ns, &format!("{ch}-webhook"), "current").expect("webhook key");
        assert!(
            !c["status"].to_string().contains(&key),
            "a webhook key leaked into status"
        );
    }
    for r in ["weekday-digest", "handoff-to-crm"] {
        ready("automationrule", r, "xin-acme");
    }
    let ij = ingest("xin-acme", "faq-2026-11");
    // The example FAQ: three Markdown keys, one short chunk each.
    assert_eq!(ij["status"]["documents"], 3);
    assert_eq!(ij["status"]["chunks"], 3);
    assert_eq!(ij["status"]["failedDocuments"], 0);
    assert_eq!(str_at(&ij, "/status/jobName"), "ingest-faq-2026-11");

    let acme_uid = uid_of(&["tenant", "acme"]);
    for kind in ["deployment", "service", "hpa"] {
        for name in ["xin-orchestrator", "xin-gateway"] {
            let o = get_json(&[kind, name, "-n", "xin-acme"])
                .unwrap_or_else(|| panic!("{kind} {name} missing"));
            assert_eq!(
                str_at(&o, "/metadata/ownerReferences/0/uid"),
                acme_uid,
                "{kind} {name}"
            );
            assert_eq!(
                o.pointer("/metadata/ownerReferences/0/controller"),
                Some(&Value::Bool(true))
            );
        }
    }
    for (kind, name) in [
        ("deployment", "xin-automation"),
        ("pdb", "xin-orchestrator"),
        ("resourcequota", "xin-quota"),
        ("limitrange", "xin-limits"),
        ("networkpolicy", "xin-default-deny"),
        ("networkpolicy", "xin-gateway"),
        ("networkpolicy", "xin-orchestrator"),
        ("networkpolicy", "xin-ingest"),
        ("networkpolicy", "xin-automation"),
        ("role", "xin-automation"),
        ("rolebinding", "xin-ingest"),
        ("serviceaccount", "xin-gateway"),
        ("secret", "xin-tenant-signing"),
        ("secret", "xin-gateway-routes"),
        ("ingress", "xin-gateway"),
    ] {
        let o = get_json(&[kind, name, "-n", "xin-acme"])
            .unwrap_or_else(|| panic!("{kind} {name} missing"));
        assert_eq!(
            str_at(&o, "/metadata/ownerReferences/0/uid"),
            acme_uid,
            "{kind} {name}"
        );
    }
    let ns = get_json(&["namespace", "xin-acme"]).unwrap();
    assert_eq!(str_at(&ns, "/metadata/labels/xin.dev~1tenant"), "acme");
    // globex has channels but no rules: a gateway and no automation worker.
    assert!(get_json(&["deployment", "xin-gateway", "-n", "xin-globex"]).is_some());
    assert!(get_json(&["deployment", "xin-automation", "-n", "xin-globex"]).is_none());

    let routes: Value = serde_json::from_str(
        &secret_value("xin-acme", "xin-gateway-routes", "routes.json").unwrap(),
    )
    .unwrap();
    let names: Vec<&str> = routes["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["telegram", "web"]);
    assert_eq!(
        routes["channels"][1]["allowedOrigins"][0],
        "https://www.acme.example"
    );

    let out = kubectl_ok(&["get", "xin", "-A"]);
    for n in [
        "acme",
        "globex",
        "telegram",
        "whatsapp",
        "weekday-digest",
        "faq-2026-11",
    ] {
        assert!(out.contains(n), "kubectl get xin -A lacks {n}:\n{out}");
    }
}

#[test]
fn the_single_network_policy_of_earlier_versions_is_pruned_on_upgrade() {
    operator();
    let t = TestTenant::create("netpol", "");
    ready("tenant", &t.name, "");
    let uid = uid_of(&["tenant", &t.name]);
    // What an earlier operator left: one `xin-allow` policy, owned by the Tenant.
    apply(&format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: xin-allow\n  namespace: {ns}\n  \
         labels: {{app.kubernetes.io/managed-by: xin-operator, app.kubernetes.io/name: xin, app.kubernetes.io/component: tenant, xin.dev/tenant: {name}}}\n  \
         ownerReferences: [{{apiVersion: xin.dev/v1alpha1, kind: Tenant, name: {name}, uid: {uid}, controller: true}}]\n\
         spec:\n  podSelector: {{}}\n  policyTypes: [Ingress, Egress]\n  ingress: [{{}}]\n  egress: [{{}}]\n",
        ns = t.ns,
        name = t.name,
    ));
    wait_until("xin-allow to be pruned", MINUTE, || {
        match get_json(&["networkpolicy", "xin-allow", "-n", &t.ns]) {
            None => Ok(()),
            Some(_) => Err("still there".to_string()),
        }
    });
    let names = kubectl_ok(&[
        "get",
        "networkpolicy",
        "-n",
        &t.ns,
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    let mut names: Vec<&str> = names.split_whitespace().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "xin-automation",
            "xin-default-deny",
            "xin-gateway",
            "xin-ingest",
            "xin-orchestrator"
        ]
    );
}

#[test]
fn a_deleted_child_is_recreated_and_an_edited_child_reverted() {
    operator();
    let t = TestTenant::create("drift", "");
    ready("tenant", &t.name, "");

    let before = uid_of(&["service", "xin-orchestrator", "-n", &t.ns]);
    kubectl_ok(&["delete", "service", "xin-orchestrator", "-n", &t.ns]);
    wait_until("the Service to be recreated", MINUTE, || {
        let now = uid_of(&["service", "xin-orchestrator", "-n", &t.ns]);
        if !now.is_empty() && now != before {
            Ok(())
        } else {
            Err(format!("uid {now:?}"))
        }
    });

    kubectl_ok(&[
        "set",
        "image",
        "deployment/xin-orchestrator",
        "-n",
        &t.ns,
        "orchestrator=evil.example/x:1",
    ]);
    wait_until("the image to be reverted", MINUTE, || {
        let d = get_json(&["deployment", "xin-orchestrator", "-n", &t.ns]).ok_or("gone")?;
        let img = str_at(&d, "/spec/template/spec/containers/0/image").to_string();
        if img == "ghcr.io/xin-dev/xin-orchestrator:0.1.0" {
            Ok(())
        } else {
            Err(img)
        }
    });

    kubectl_ok(&[
        "label",
        "resourcequota",
        "xin-quota",
        "-n",
        &t.ns,
        "xin.dev/tenant-",
    ]);
    wait_until("the label to be restored", MINUTE, || {
        let q = get_json(&["resourcequota", "xin-quota", "-n", &t.ns]).ok_or("gone")?;
        match str_at(&q, "/metadata/labels/xin.dev~1tenant") {
            n if n == t.name => Ok(()),
            other => Err(other.to_string()),
        }
    });
}

#[test]
fn rotating_a_webhook_key_keeps_the_old_key_until_it_expires_and_rolls_the_gateway() {
    operator();
    let t = TestTenant::create("rotate", "");
    apply(&t.telegram_secret("tg"));
    apply(&t.channel("bot", "tg"));
    ready("channel", "bot", &t.ns);
    ready("tenant", &t.name, "");
    let old = secret_value(&t.ns, "bot-webhook", "current").unwrap();
    let hash = |d: &Value| {
        str_at(
            d,
            "/spec/template/metadata/annotations/xin.dev~1config-hash",
        )
        .to_string()
    };
    let gw = get_json(&["deployment", "xin-gateway", "-n", &t.ns]).unwrap();
    let old_hash = hash(&gw);

    kubectl_ok(&[
        "annotate",
        "channel",
        "bot",
        "-n",
        &t.ns,
        "xin.dev/rotate-webhook-key=2026-11-23T10:00",
    ]);
    let new = wait_until("a new key", MINUTE, || {
        match secret_value(&t.ns, "bot-webhook", "current") {
            Some(k) if k != old => Ok(k),
            other => Err(format!("{:?}", other.map(|_| "unchanged"))),
        }
    });
    assert_eq!(
        secret_value(&t.ns, "bot-webhook", "previous").as_deref(),
        Some(old.as_str())
    );
    let expires = secret_value(&t.ns, "bot-webhook", "previous-expires-at")
        .expect("expiry of the previous key");
    let ch = wait_until("status to show the previous key's expiry", MINUTE, || {
        let c = get_json(&["channel", "bot", "-n", &t.ns]).ok_or("gone")?;
        if str_at(&c, "/status/previousKeyExpiresAt").is_empty() {
            Err(c["status"].to_string())
        } else {
            Ok(c)
        }
    });
    assert_eq!(
        str_at(&ch, "/status/lastRotationRequest"),
        "2026-11-23T10:00"
    );
    assert!(!ch["status"].to_string().contains(&new));

    // The gateway gets both keys, and its pods roll.
    let routes = wait_until("routes with both keys", MINUTE, || {
        let r: Value = serde_json::from_str(
            &secret_value(&t.ns, "xin-gateway-routes", "routes.json").unwrap_or_default(),
        )
        .map_err(|e| e.to_string())?;
        let keys = r["channels"][0]["keys"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if keys.len() == 2 {
            Ok(keys)
        } else {
            Err(format!("{} keys", keys.len()))
        }
    });
    assert_eq!(routes[0]["key"], new.as_str());
    assert_eq!(routes[1]["key"], old.as_str());
    assert_eq!(routes[1]["expiresAt"], expires.as_str());
    let new_hash = wait_until("a new pod-template hash", MINUTE, || {
        let d = get_json(&["deployment", "xin-gateway", "-n", &t.ns]).ok_or("gone")?;
        let h = hash(&d);
        if h != old_hash {
            Ok(h)
        } else {
            Err("unchanged".into())
        }
    });
    wait_until(
        "a Running gateway pod with the new hash",
        2 * MINUTE,
        || {
            let pods = get_json(&[
                "pods",
                "-n",
                &t.ns,
                "-l",
                "app.kubernetes.io/component=gateway",
            ])
            .ok_or("no list")?;
            let rolled = pods["items"].as_array().into_iter().flatten().any(|p| {
                str_at(p, "/metadata/annotations/xin.dev~1config-hash") == new_hash
                    && str_at(p, "/status/phase") == "Running"
            });
            if rolled {
                Ok(())
            } else {
                Err("not yet".into())
            }
        },
    );
    assert!(
        events_for(&t.ns, "bot")
            .iter()
            .any(|(r, _)| r == "WebhookKeyRotated")
    );

    // A request already acted on is not a new one: reconciled again with the same annotation
    // (here because the spec changed), the Channel keeps its key. Re-applying the same value
    // alone would change nothing, so the API server would send no event and the operator would
    // never look. Wait for the reconcile of the edited generation to show in the status (the
    // evidence that the operator has seen the annotation again), and only then check the key.
    let before = get_json(&["channel", "bot", "-n", &t.ns]).unwrap();
    let generation = before["metadata"]["generation"].as_i64().unwrap();
    kubectl_ok(&[
        "patch",
        "channel",
        "bot",
        "-n",
        &t.ns,
        "--type=merge",
        "-p",
        r#"{"metadata":{"annotations":{"xin.dev/rotate-webhook-key":"2026-11-23T10:00"}},"spec":{"displayName":"bot, renamed"}}"#,
    ]);
    let ch = wait_until("the edited generation to be reconciled", MINUTE, || {
        let c = get_json(&["channel", "bot", "-n", &t.ns]).ok_or("gone")?;
        let g = c["metadata"]["generation"].as_i64().unwrap_or_default();
        let seen = c["status"]["observedGeneration"]
            .as_i64()
            .unwrap_or_default();
        if g > generation && seen == g && condition_status(&c, "Ready") == Some("True") {
            Ok(c)
        } else {
            Err(format!("generation {g}, observed {seen}"))
        }
    });
    assert_eq!(
        str_at(&ch, "/status/lastRotationRequest"),
        "2026-11-23T10:00"
    );
    assert_eq!(
        str_at(&ch, "/status/keyCreatedAt"),
        str_at(&before, "/status/keyCreatedAt"),
        "the key was not recreated"
    );
    assert_eq!(
        secret_value(&t.ns, "bot-webhook", "current").as_deref(),
        Some(new.as_str())
    );
    assert_eq!(
        secret_value(&t.ns, "bot-webhook", "previous").as_deref(),
        Some(old.as_str())
    );
}

#[test]
fn suspend_scales_to_zero_and_resume_restores_the_hpa() {
    operator();
    let t = TestTenant::create("suspend", "");
    ready("tenant", &t.name, "");
    assert!(get_json(&["hpa", "xin-orchestrator", "-n", &t.ns]).is_some());

    patch_tenant(&t.name, r#"{"spec":{"suspend":true}}"#);
    let obj = wait_until("Ready with reason Suspended", MINUTE, || {
        let o = get_json(&["tenant", &t.name]).ok_or("gone")?;
        if condition_reason(&o, "Ready") == "Suspended" {
            Ok(o)
        } else {
            Err(condition_reason(&o, "Ready"))
        }
    });
    assert_eq!(condition_status(&obj, "Ready"), Some("True"));
    wait_until("0 replicas and no HPA", MINUTE, || {
        let d = get_json(&["deployment", "xin-orchestrator", "-n", &t.ns]).ok_or("gone")?;
        let replicas = d.pointer("/spec/replicas").and_then(Value::as_i64);
        let hpa = get_json(&["hpa", "xin-orchestrator", "-n", &t.ns]);
        if replicas == Some(0) && hpa.is_none() {
            Ok(())
        } else {
            Err(format!("replicas {replicas:?}, hpa {}", hpa.is_some()))
        }
    });

    patch_tenant(&t.name, r#"{"spec":{"suspend":false}}"#);
    wait_until("the HPA back and replicas above zero", MINUTE, || {
        let d = get_json(&["deployment", "xin-orchestrator", "-n", &t.ns]).ok_or("gone")?;
        let replicas = d
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let hpa = get_json(&["hpa", "xin-orchestrator", "-n", &t.ns]);
        if replicas >= 1 && hpa.is_some() {
            Ok(())
        } else {
            Err(format!("replicas {replicas}, hpa {}", hpa.is_some()))
        }
    });
    let o = ready("tenant", &t.name, "");
    assert_eq!(condition_reason(&o, "Ready"), "Reconciled");
}

#[test]
fn a_missing_secret_is_a_false_condition_with_reason_until_it_is_created() {
    operator();
    let t = TestTenant::create("missing", "");
    ready("tenant", &t.name, "");
    apply(&t.channel("bot", "tg-later"));
    let c = wait_condition("channel", "bot", &t.ns, "Ready", "False", MINUTE);
    assert_eq!(condition_reason(&c, "Ready"), "SecretNotFound");
    assert_eq!(condition_status(&c, "Stalled"), Some("True"));
    assert_eq!(condition_status(&c, "CredentialsResolved"), Some("False"));
    let ready_msg = c["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["type"] == "Ready")
        .unwrap()["message"]
        .to_string();
    assert!(
        ready_msg.contains("tg-later"),
        "the message names the Secret: {ready_msg}"
    );
    wait_until("a SecretNotFound event", MINUTE, || {
        let ev = events_for(&t.ns, "bot");
        if ev
            .iter()
            .any(|(r, m)| r == "SecretNotFound" && m.contains("tg-later"))
        {
            Ok(())
        } else {
            Err(format!("{ev:?}"))
        }
    });

    // The same, as the operator's gauge of its objects' conditions.
    let series = |status: &str, reason: &str| {
        format!(
            "xin_operator_object_condition{{kind=\"Channel\",namespace=\"{}\",name=\"bot\",tenant=\"{}\",condition=\"Ready\",status=\"{status}\",reason=\"{reason}\"}} 1",
            t.ns, t.name
        )
    };
    let scrape = || {
        operator()
            .get("/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
    };
    wait_until("the gauge to show the channel's reason", MINUTE, || {
        let body = scrape();
        if body.contains(&series("False", "SecretNotFound")) {
            Ok(())
        } else {
            Err(body)
        }
    });

    apply(&t.telegram_secret("tg-later"));
    let c = wait_condition("channel", "bot", &t.ns, "Ready", "True", 2 * MINUTE);
    assert_eq!(condition_reason(&c, "Ready"), "Reconciled");
    // The operator's store sees its own status patch a moment later.
    wait_until("the gauge to show the channel Ready", MINUTE, || {
        let body = scrape();
        if body.contains(&series("True", "Reconciled"))
            && !body.contains(&series("False", "SecretNotFound"))
        {
            Ok(())
        } else {
            Err(body)
        }
    });
    wait_until("the gateway for the channel", MINUTE, || {
        get_json(&["deployment", "xin-gateway", "-n", &t.ns]).ok_or_else(|| "none".to_string())
    });

    // The last Channel gone, the gateway and its routes are pruned; the user's Secret stays.
    kubectl_ok(&["delete", "channel", "bot", "-n", &t.ns]);
    wait_until("the gateway to be pruned", MINUTE, || {
        let left: Vec<&str> = [
            ("deployment", "xin-gateway"),
            ("service", "xin-gateway"),
            ("hpa", "xin-gateway"),
            ("pdb", "xin-gateway"),
            ("secret", "xin-gateway-routes"),
            ("secret", "bot-webhook"),
        ]
        .into_iter()
        .filter(|(k, n)| get_json(&[k, n, "-n", &t.ns]).is_some())
        .map(|(_, n)| n)
        .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("still there: {left:?}"))
        }
    });
    assert!(
        get_json(&["secret", "tg-later", "-n", &t.ns]).is_some(),
        "a user's Secret is never pruned"
    );
    assert!(get_json(&["deployment", "xin-orchestrator", "-n", &t.ns]).is_some());
}

#[test]
fn a_channel_outside_a_tenant_namespace_is_refused_with_a_reason() {
    operator();
    let ns = TestNamespace::create("orphan");
    apply(&format!(
        "apiVersion: xin.dev/v1alpha1\nkind: Channel\nmetadata: {{name: lost, namespace: {}}}\nspec:\n  type: web\n  displayName: lost\n  \
         web: {{allowedOrigins: ['https://a.example'], identitySecretRef: {{name: s, key: k}}}}\n",
        ns.name
    ));
    let c = wait_condition("channel", "lost", &ns.name, "Ready", "False", MINUTE);
    assert_eq!(condition_reason(&c, "Ready"), "TenantNotFound");
}

#[test]
fn invalid_manifests_are_refused_by_the_api_server_with_their_messages() {
    install_crds_once();
    let ns = TestNamespace::create("invalid");
    let n = &ns.name;
    let tenant = |name: &str, extra: &str| {
        format!(
            "apiVersion: xin.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: {name}}}\nspec:\n  displayName: x\n{extra}"
        )
    };
    let channel = |spec: &str| {
        format!(
            "apiVersion: xin.dev/v1alpha1\nkind: Channel\nmetadata: {{name: c, namespace: {n}}}\nspec:\n  displayName: x\n{spec}"
        )
    };
    let rule = |spec: &str| {
        format!(
            "apiVersion: xin.dev/v1alpha1\nkind: AutomationRule\nmetadata: {{name: r, namespace: {n}}}\nspec:\n{spec}"
        )
    };
    let ij = |name: &str, spec: &str| {
        format!(
            "apiVersion: xin.dev/v1alpha1\nkind: IngestionJob\nmetadata: {{name: {name}, namespace: {n}}}\nspec:\n{spec}"
        )
    };
    let webhook_action = "  action: {webhook: {url: 'https://h.example/x'}}\n";
    let cases: Vec<(String, &str)> = vec![
        (
            tenant("bad-tz", "  timeZone: 'Not a zone!'\n"),
            "spec.timeZone",
        ),
        (
            tenant(
                "bad-scale",
                "  orchestrator: {minReplicas: 5, maxReplicas: 2}\n",
            ),
            "orchestrator.minReplicas must not exceed orchestrator.maxReplicas",
        ),
        (
            tenant(
                "half-db",
                "  database: {urlSecretRef: {name: db, key: url}}\n",
            ),
            "database.urlSecretRef and database.ownerUrlSecretRef go together",
        ),
        (
            tenant("bad-plan", "  plan: Platinum\n"),
            "Unsupported value: \"Platinum\"",
        ),
        (
            tenant(&"x".repeat(51), ""),
            "a Tenant's name must be at most 50 characters",
        ),
        (
            tenant(
                "bad-llm",
                "  llm: {endpoint: 'https://l.example', model: m, fallbackModel: m}\n",
            ),
            "llm.fallbackModel must differ from llm.model",
        ),
        (
            channel("  type: telegram\n"),
            "spec.telegram is required when spec.type is telegram",
        ),
        (channel("  type: sms\n"), "Unsupported value: \"sms\""),
        (
            channel(
                "  type: whatsapp\n  meta: {appSecretRef: {name: a, key: b}, accessTokenSecretRef: {name: a, key: c}}\n",
            ),
            "spec.meta with phoneNumberId is required when spec.type is whatsapp",
        ),
        (
            channel(
                "  type: web\n  web: {allowedOrigins: ['https://a.example'], identitySecretRef: {name: s, key: k}}\n  maxBodyBytes: 10\n",
            ),
            "should be greater than or equal to 1024",
        ),
        (
            channel(
                "  type: web\n  web: {allowedOrigins: ['https://a.example'], identitySecretRef: {name: s, key: k}}\n  rateLimit: {requestsPerSecond: 50, burst: 10}\n",
            ),
            "rateLimit.burst must be at least rateLimit.requestsPerSecond",
        ),
        (
            channel(
                "  type: web\n  web: {allowedOrigins: ['not-a-url'], identitySecretRef: {name: s, key: k}}\n",
            ),
            "allowedOrigins",
        ),
        (
            channel(
                "  type: web\n  web: {allowedOrigins: ['https://a.example'], identitySecretRef: {name: s, key: k}, theme: {primaryColor: 'teal'}}\n",
            ),
            "spec.web.theme.primaryColor",
        ),
        (
            channel(
                "  type: web\n  web: {allowedOrigins: ['https://a.example'], identitySecretRef: {name: s, key: k}, theme: {locale: de}}\n",
            ),
            "Unsupported value: \"de\"",
        ),
        (
            channel(&format!(
                "  type: web\n  web: {{allowedOrigins: ['https://a.example'], identitySecretRef: {{name: s, key: k}}, theme: {{title: '{}'}}}}\n",
                "t".repeat(65)
            )),
            "spec.web.theme.title",
        ),
        (
            rule(&format!(
                "  trigger: {{schedule: {{cron: '0 9 * * *'}}, event: {{types: [MessageReceived]}}}}\n{webhook_action}"
            )),
            "trigger needs exactly one of schedule or event",
        ),
        (
            rule(
                "  trigger: {event: {types: [MessageReceived]}}\n  action: {webhook: {url: 'https://h.example'}, email: {smtpSecretRef: {name: s}, to: ['a@b.example'], subjectTemplate: s, bodyTemplate: b}}\n",
            ),
            "action needs exactly one of webhook, crm or email",
        ),
        (
            rule(&format!(
                "  trigger: {{schedule: {{cron: 'every day'}}}}\n{webhook_action}"
            )),
            "spec.trigger.schedule.cron",
        ),
        (
            ij(
                "overlap",
                "  source: {configMap: {name: faq}}\n  chunking: {size: 200, overlap: 300}\n",
            ),
            "chunking.overlap must be smaller than chunking.size",
        ),
        (
            ij("nosource", "  source: {}\n"),
            "source needs exactly one of configMap, url or s3",
        ),
    ];
    assert!(cases.len() >= 10);
    for (manifest, message) in &cases {
        let run = kubectl_stdin(&["apply", "-f", "-"], Some(manifest));
        assert!(!run.ok, "accepted but should be refused:\n{manifest}");
        assert!(
            run.stderr.contains(message),
            "refusal without {message:?}: {}\n{manifest}",
            run.stderr
        );
    }

    // Immutable fields: a Channel's type and an IngestionJob's spec.
    apply(&channel(
        "  type: web\n  web: {allowedOrigins: ['https://a.example'], identitySecretRef: {name: s, key: k}}\n",
    ));
    let run = kubectl_stdin(
        &["apply", "-f", "-"],
        Some(&channel(
            "  type: telegram\n  telegram: {botTokenSecretRef: {name: s, key: k}}\n",
        )),
    );
    assert!(
        !run.ok && run.stderr.contains("spec.type is immutable"),
        "{}",
        run.stderr
    );
    apply(&ij("fixed", "  source: {configMap: {name: faq}}\n"));
    let run = kubectl_stdin(
        &["apply", "-f", "-"],
        Some(&ij("fixed", "  source: {configMap: {name: other}}\n")),
    );
    assert!(
        !run.ok && run.stderr.contains("an IngestionJob's spec is immutable"),
        "{}",
        run.stderr
    );
    // A Replace without tags would take every untagged document of the tenant.
    let run = kubectl_stdin(
        &["apply", "-f", "-"],
        Some(&ij(
            "untagged",
            "  source: {configMap: {name: faq}}\n  mode: Replace\n",
        )),
    );
    assert!(
        !run.ok && run.stderr.contains("mode Replace needs tags"),
        "{}",
        run.stderr
    );
    apply(&ij(
        "tagged",
        "  source: {configMap: {name: faq}}\n  mode: Replace\n  tags: [faq]\n",
    ));
}

/// Each rule added so that a manifest the operator could only half build is refused up front:
/// the refusal names the field, and says what is wrong with it. Valid values of the same fields
/// (integer and string quantities among them) are accepted, so no rule refuses too much.
#[test]
fn hostile_manifests_are_refused_naming_the_field() {
    install_crds_once();
    let ns = TestNamespace::create("hostile");
    let n = &ns.name;
    let tenant = |name: &str, extra: &str| {
        format!(
            "apiVersion: xin.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: {name}}}\nspec:\n  displayName: x\n{extra}"
        )
    };
    let resources = |r: &str| tenant("res", &format!("  orchestrator: {{resources: {r}}}\n"));
    let channel = |name: &str, spec: &str| {
        format!(
            "apiVersion: xin.dev/v1alpha1\nkind: Channel\nmetadata: {{name: {name}, namespace: {n}}}\nspec:\n  displayName: x\n{spec}"
        )
    };
    let telegram = "  type: telegram\n  telegram: {botTokenSecretRef: {name: tg, key: token}}\n";
    let ingress = |i: &str| {
        channel(
            "c",
            &format!("{telegram}  ingress: {{host: hooks.example, {i}}}\n"),
        )
    };
    let ij = |source: &str| {
        format!(
            "apiVersion: xin.dev/v1alpha1\nkind: IngestionJob\nmetadata: {{name: j, namespace: {n}}}\nspec:\n  source: {source}\n"
        )
    };
    // (manifest, the field the refusal names, what it says)
    let cases: Vec<(String, &str, &str)> = vec![
        (
            tenant("has.a-dot", ""),
            "metadata.name",
            "must be a DNS-1123 label",
        ),
        (
            resources("{limits: {cpu: lots}}"),
            "spec.orchestrator.resources.limits[cpu]",
            "must be a quantity such as 500m, 2 or 1Gi",
        ),
        (
            resources("{requests: {memory: 1 Gi}}"),
            "spec.orchestrator.resources.requests[memory]",
            "must be a quantity",
        ),
        (
            resources("{requests: {memory: '-512Mi'}}"),
            "spec.orchestrator.resources.requests[memory]",
            "a request must not be negative",
        ),
        (
            resources("{requests: {cpu: -1}}"),
            "spec.orchestrator.resources.requests[cpu]",
            "a request must not be negative",
        ),
        (
            resources("{limits: {memory: '0Mi'}}"),
            "spec.orchestrator.resources.limits[memory]",
            "a limit must be greater than zero",
        ),
        (
            resources("{limits: {cpu: 0}}"),
            "spec.orchestrator.resources.limits[cpu]",
            "a limit must be greater than zero",
        ),
        (
            resources("{requests: {cpu: '2'}, limits: {cpu: 500m}}"),
            "spec.orchestrator.resources.requests",
            "a request must not exceed the limit of the same resource",
        ),
        (
            resources("{requests: {memory: 2}, limits: {memory: 1}}"),
            "spec.orchestrator.resources.requests",
            "a request must not exceed the limit of the same resource",
        ),
        // A fractional number is neither an integer nor a string: write '1.5' or 1500m.
        (
            resources("{limits: {cpu: 1.5}}"),
            "spec.orchestrator.resources.limits.cpu",
            "must be of type integer,string",
        ),
        (
            resources("{limits: {memroy: 1Gi}}"),
            "spec.orchestrator.resources.limits",
            "resource names are cpu, memory, ephemeral-storage",
        ),
        (
            resources("{claims: [{name: gpu}]}"),
            "spec.orchestrator.resources.claims",
            "resource claims are not supported",
        ),
        (
            tenant(
                "bad-ref",
                "  llm: {endpoint: 'https://l.example', model: m, apiKeySecretRef: {name: LLM_Key, key: k}}\n",
            ),
            "spec.llm.apiKeySecretRef.name",
            "should match",
        ),
        (
            channel(
                "c",
                "  type: telegram\n  telegram: {botTokenSecretRef: {name: tg, key: 'bot token'}}\n",
            ),
            "spec.telegram.botTokenSecretRef.key",
            "should match",
        ),
        (
            channel(&"c".repeat(246), telegram),
            "metadata.name",
            "a Channel's name must be at most 245 characters",
        ),
        (
            ingress("className: Public_Nginx"),
            "spec.ingress.className",
            "should match",
        ),
        (
            ingress("tlsSecretName: 'hooks tls'"),
            "spec.ingress.tlsSecretName",
            "should match",
        ),
        (
            ingress("annotations: {'cert manager/issuer': x}"),
            "spec.ingress.annotations",
            "annotation keys must be Kubernetes qualified names",
        ),
        (
            ij("{configMap: {name: FAQ}}"),
            "spec.source.configMap.name",
            "should match",
        ),
        (
            ij("{configMap: {name: faq, keys: ['a/b']}}"),
            "spec.source.configMap.keys[0]",
            "should match",
        ),
        (
            ij(
                "{s3: {endpoint: 'https://s3.example', bucket: docs, credentialsSecretRef: {name: 's3 creds'}}}",
            ),
            "spec.source.s3.credentialsSecretRef.name",
            "should match",
        ),
    ];
    for (manifest, field, message) in &cases {
        let run = kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], Some(manifest));
        assert!(!run.ok, "accepted but should be refused:\n{manifest}");
        assert!(
            run.stderr.contains(&format!("{field}:")) && run.stderr.contains(message),
            "refusal should name {field} and say {message:?}: {}\n{manifest}",
            run.stderr
        );
    }

    // What the rules must still accept.
    let accepted = [
        tenant("a-1", ""),
        resources(
            "{limits: {cpu: 2, memory: 1Gi, ephemeral-storage: '1G', example.com/gpu: 1}, requests: {cpu: 500m, memory: 1Gi, ephemeral-storage: 0}}",
        ),
        resources("{requests: {cpu: '0.5', memory: 134217728}}"),
        resources("{limits: {hugepages-2Mi: 64Mi, cpu: '1.5'}}"),
        resources("{claims: []}"),
        channel(&"c".repeat(245), telegram),
        ingress(
            "className: public-nginx, tlsSecretName: hooks.tls, annotations: {cert-manager.io/cluster-issuer: x, nginx.ingress.kubernetes.io/proxy-body-size: 1m, simple: 'y'}",
        ),
        channel(
            "c",
            "  type: telegram\n  telegram: {botTokenSecretRef: {name: tg.bot-1, key: BOT_token.v2-1}}\n",
        ),
        ij("{configMap: {name: faq.v1, keys: [faq.md, Q_and-A.txt]}}"),
    ];
    for manifest in &accepted {
        let run = kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], Some(manifest));
        assert!(run.ok, "refused but valid: {}\n{manifest}", run.stderr);
    }
}

fn install_crds_once() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(xin_e2e::operator::install_crds);
}

#[test]
fn deleting_a_tenant_with_delete_policy_removes_its_namespace() {
    operator();
    let t = TestTenant::create("del", "");
    apply(&t.telegram_secret("tg"));
    apply(&t.channel("bot", "tg"));
    apply(&format!(
        "apiVersion: xin.dev/v1alpha1\nkind: AutomationRule\nmetadata: {{name: r, namespace: {}}}\nspec:\n  trigger: {{event: {{types: [MessageReceived]}}}}\n  action: {{webhook: {{url: 'https://h.example'}}}}\n",
        t.ns
    ));
    ready("channel", "bot", &t.ns);
    wait_until("the automation worker", MINUTE, || {
        get_json(&["deployment", "xin-automation", "-n", &t.ns]).ok_or("none".to_string())
    });
    let tenant = ready("tenant", &t.name, "");
    assert!(
        tenant["metadata"]["finalizers"]
            .to_string()
            .contains("xin.dev/decommission")
    );

    kubectl_ok(&["delete", "tenant", &t.name, "--wait=false"]);
    wait_until("the Tenant to go", 2 * MINUTE, || {
        match get_json(&["tenant", &t.name]) {
            None => Ok(()),
            Some(o) => Err(format!("conditions {}", o["status"]["conditions"])),
        }
    });
    wait_until("the namespace to go", 3 * MINUTE, || {
        match get_json(&["namespace", &t.ns]) {
            None => Ok(()),
            Some(n) => Err(str_at(&n, "/status/phase").to_string()),
        }
    });
}

#[test]
fn deleting_a_tenant_with_retain_policy_keeps_namespace_and_data_but_no_tokens() {
    operator();
    let t = TestTenant::create("keep", "  suspend: false\n");
    patch_tenant(&t.name, r#"{"spec":{"deletionPolicy":"Retain"}}"#);
    apply(&t.telegram_secret("tg"));
    apply(&t.channel("bot", "tg"));
    ready("channel", "bot", &t.ns);
    ready("tenant", &t.name, "");
    assert!(secret_value(&t.ns, "bot-webhook", "current").is_some());

    kubectl_ok(&["delete", "tenant", &t.name, "--wait=false"]);
    wait_until("the Tenant to go", 2 * MINUTE, || {
        match get_json(&["tenant", &t.name]) {
            None => Ok(()),
            Some(_) => Err("still there".into()),
        }
    });
    let ns = get_json(&["namespace", &t.ns]).expect("the namespace is retained");
    assert_eq!(str_at(&ns, "/status/phase"), "Active");
    assert!(
        ns.pointer("/metadata/annotations/xin.dev~1tenant-uid")
            .is_none(),
        "released for adoption"
    );
    for s in ["bot-webhook", "xin-tenant-signing", "xin-gateway-routes"] {
        assert!(
            get_json(&["secret", s, "-n", &t.ns]).is_none(),
            "{s} must be deleted so its tokens are invalid"
        );
    }
    // The user's data stays: their Secrets and Channels.
    assert!(get_json(&["secret", "notes", "-n", &t.ns]).is_some());
    assert!(get_json(&["channel", "bot", "-n", &t.ns]).is_some());
    kubectl_ok(&["delete", "namespace", &t.ns, "--wait=false"]);
}

#[test]
fn an_ingress_host_or_annotation_the_platform_does_not_allow_is_refused() {
    operator();
    let allowed = "  network: {allowedDomains: [shared.example]}\n";
    let other = TestTenant::create("ingother", allowed);
    let t = TestTenant::create("ingrefuse", allowed);
    let bot = |t: &TestTenant, host: &str, annotations: &str| {
        apply(&t.telegram_secret("tg"));
        apply(&format!(
            "{}  ingress: {{host: {host}, annotations: {{{annotations}}}}}\n",
            t.channel("bot", "tg")
        ));
    };
    let refused = |t: &TestTenant, reason: &str| {
        wait_until(&format!("Ready=False {reason}"), MINUTE, || {
            let c = get_json(&["channel", "bot", "-n", &t.ns]).ok_or("gone")?;
            match condition_reason(&c, "Ready") {
                r if r == reason => Ok(c),
                other => Err(other),
            }
        })
    };
    let ingress_hosts = |t: &TestTenant| -> Vec<String> {
        get_json(&["ingress", "xin-gateway", "-n", &t.ns])
            .map(|i| {
                i["spec"]["rules"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| str_at(r, "/host").to_string())
                    .collect()
            })
            .unwrap_or_default()
    };

    // A host outside the Tenant's domains.
    bot(&t, "hooks.other.example", "");
    let c = refused(&t, "HostNotAllowed");
    assert!(condition_message(&c, "Ready").contains("hooks.other.example"));
    assert!(ingress_hosts(&t).is_empty());

    // An ingress controller's snippet is not on the allowlist.
    bot(
        &t,
        "hooks.shared.example",
        "nginx.ingress.kubernetes.io/configuration-snippet: 'return 200;'",
    );
    let c = refused(&t, "IngressAnnotationNotAllowed");
    assert!(condition_message(&c, "Ready").contains("configuration-snippet"));
    assert!(ingress_hosts(&t).is_empty());

    // Allowed: a cert-manager annotation on one of its domains.
    bot(
        &t,
        "hooks.shared.example",
        "cert-manager.io/cluster-issuer: le",
    );
    ready("channel", "bot", &t.ns);
    let hosts = wait_until("the Ingress rule", MINUTE, || match ingress_hosts(&t) {
        h if h.is_empty() => Err("none".to_string()),
        h => Ok(h),
    });
    assert_eq!(hosts, ["hooks.shared.example"]);
    let ing = get_json(&["ingress", "xin-gateway", "-n", &t.ns]).unwrap();
    assert_eq!(
        str_at(
            &ing,
            "/metadata/annotations/cert-manager.io~1cluster-issuer"
        ),
        "le"
    );

    // Another Tenant allowed the same domain cannot take a host this one had first.
    bot(&other, "hooks.shared.example", "");
    let c = refused(&other, "HostNotAllowed");
    // Named without naming the other Tenant.
    let msg = condition_message(&c, "Ready");
    assert!(
        msg.contains("another Tenant's Channel") && !msg.contains(&t.ns),
        "{msg}"
    );
    assert!(ingress_hosts(&other).is_empty());
}

#[test]
fn an_earlier_meta_app_secret_that_cannot_be_read_is_reported_on_the_channel() {
    operator();
    let t = TestTenant::create("metaprev", "");
    apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: meta, namespace: {ns}}}\nstringData: {{app: new-secret, token: t}}\n---\n\
         apiVersion: xin.dev/v1alpha1\nkind: Channel\nmetadata: {{name: wa, namespace: {ns}}}\n\
         spec:\n  type: whatsapp\n  displayName: wa\n  meta:\n    phoneNumberId: '106540352242922'\n    \
         appSecretRef: {{name: meta, key: app}}\n    accessTokenSecretRef: {{name: meta, key: token}}\n    \
         previousAppSecrets: [{{secretRef: {{name: meta-old, key: app}}, expiresAt: '2999-01-01T00:00:00Z'}}]\n",
        ns = t.ns
    ));
    // The gateway could not serve it (its routes need every unexpired secret): the Channel
    // says so instead of looking Ready.
    let c = wait_condition(
        "channel",
        "wa",
        &t.ns,
        "CredentialsResolved",
        "False",
        MINUTE,
    );
    assert!(
        condition_message(&c, "CredentialsResolved").contains("meta-old"),
        "{}",
        condition_message(&c, "CredentialsResolved")
    );
    assert_eq!(condition_status(&c, "Ready"), Some("False"));
    apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: meta-old, namespace: {}}}\nstringData: {{app: old-secret}}\n",
        t.ns
    ));
    ready("channel", "wa", &t.ns);
    let routes = wait_until(
        "the channel in the routes with both app secrets",
        MINUTE,
        || {
            let r: Value = serde_json::from_str(
                &secret_value(&t.ns, "xin-gateway-routes", "routes.json").ok_or("no routes")?,
            )
            .map_err(|e| e.to_string())?;
            match r["channels"][0]["credentials"]["previousAppSecrets"][0]["key"].as_str() {
                Some("old-secret") => Ok(r),
                _ => Err(r["channels"].to_string().len().to_string()),
            }
        },
    );
    assert_eq!(
        routes["channels"][0]["credentials"]["appSecret"],
        "new-secret"
    );
}

/// Documents the worker cannot read fail one by one, with reasons in the status; past the
/// spec's threshold the IngestionJob is `Failed` with the worker's reason, and what it could
/// read is in the tenant's store all the same.
#[test]
fn an_ingestion_past_its_failure_threshold_fails_with_the_reason() {
    operator();
    let t = TestTenant::create("ingfail", "");
    apply(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: kb, namespace: {ns}}}\n\
         data: {{good.md: \"# Good\\n\\nThe loyalty word is marigold.\", broken.pdf: '%PDF-1.4 broken', logo.png: 'not an image'}}\n---\n\
         apiVersion: xin.dev/v1alpha1\nkind: IngestionJob\nmetadata: {{name: kb, namespace: {ns}}}\n\
         spec: {{source: {{configMap: {{name: kb}}}}, tags: [kb], failureThreshold: {{maxFailedDocuments: 1}}}}\n",
        ns = t.ns
    ));
    run_ingestion_worker(&t.ns, "kb");
    let ij = wait_condition("ingestionjob", "kb", &t.ns, "Failed", "True", MINUTE);
    assert_eq!(str_at(&ij, "/status/phase"), "Failed");
    let ready = ij["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap();
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "FailureThresholdExceeded");
    assert!(
        str_at(ready, "/message").starts_with("ingestion failed: 2 of 3 documents failed"),
        "{ready}"
    );
    assert_eq!(ij["status"]["failedDocuments"], 2);
    let mut reasons: Vec<(String, String)> = ij["status"]["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                str_at(f, "/document").to_string(),
                str_at(f, "/reason").to_string(),
            )
        })
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            ("broken.pdf".to_string(), "CorruptDocument".to_string()),
            ("logo.png".to_string(), "UnsupportedFormat".to_string()),
        ]
    );
    assert_eq!(
        ij["status"]["documents"], 1,
        "what it could read was ingested"
    );
    assert_eq!(ij["status"]["chunks"], 1);
}
