//! An idle operator makes no write requests, and (at most) a handful of reads per Tenant: every
//! periodic re-check of unchanged objects reads the watches' stores and finds nothing to do.
//! Measured by the operator's own request counters (the client layer counts every request it
//! sends, by verb), with a short resync so several pass in the window.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn an_idle_operator_makes_zero_writes_over_several_resyncs() {
    let op = OperatorProcess::start(OPERATOR, &[("XIN_RESYNC_SECONDS", "5")]);
    let t = TestTenant::create("idle", "");
    apply(&t.telegram_secret("tg"));
    apply(&t.channel("bot", "tg"));
    apply(&format!(
        "apiVersion: xin.dev/v1alpha1\nkind: AutomationRule\nmetadata: {{name: r, namespace: {}}}\nspec:\n  trigger: {{schedule: {{cron: '0 9 * * 1-5'}}}}\n  action: {{webhook: {{url: 'https://h.example'}}}}\n",
        t.ns
    ));
    ready("tenant", &t.name, "");
    ready("channel", "bot", &t.ns);
    ready("automationrule", "r", &t.ns);

    // Let everything settle (including objects other suites left behind): no write for 10 s.
    let mut last = op.writes();
    wait_until("writes to settle", 3 * MINUTE, || {
        std::thread::sleep(Duration::from_secs(10));
        let now = op.writes();
        let settled = now == last;
        last = now;
        if settled {
            Ok(())
        } else {
            Err(format!("{now} writes so far"))
        }
    });

    let tenant_reconciles = || op.metric_sum("xin_operator_reconciles_total{kind=\"Tenant\"}", &[]);
    let writes_before = op.writes();
    let requests_before = op.requests();
    let reconciles_before = op.metric_sum("xin_operator_reconciles_total", &[]);
    let tenants_before = tenant_reconciles();
    std::thread::sleep(Duration::from_secs(20));
    let writes = op.writes() - writes_before;
    let requests = op.requests() - requests_before;
    let reconciles = op.metric_sum("xin_operator_reconciles_total", &[]) - reconciles_before;
    let tenants = tenant_reconciles() - tenants_before;
    println!(
        "idle window 20 s: {reconciles} reconciles ({tenants} of Tenants), {writes} writes, {requests} requests (watches, Lease and Events excluded): {:.2} requests per Tenant reconcile",
        requests as f64 / tenants.max(1.0)
    );
    assert!(
        reconciles >= 3.0 && tenants >= 3.0,
        "the resync did not run ({reconciles} reconciles, {tenants} of Tenants): the window proves nothing"
    );
    assert!(
        requests as f64 <= 5.0 * tenants,
        "an idle resync of one Tenant should make at most 5 requests: {requests} requests over {tenants} Tenant reconciles; see {}",
        op.log.display()
    );
    assert_eq!(
        writes,
        0,
        "an idle operator wrote {writes} times; see {}",
        op.log.display()
    );
}
