//! An idle operator makes no write requests: every periodic re-check of unchanged objects
//! finds nothing to do. Measured by the operator's own write counter (the client layer counts
//! every POST/PUT/PATCH/DELETE it sends), with a short resync so several pass in the window.

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

    let writes_before = op.writes();
    let reconciles_before = op.metric_sum("xin_operator_reconciles_total", &[]);
    std::thread::sleep(Duration::from_secs(20));
    let writes = op.writes() - writes_before;
    let reconciles = op.metric_sum("xin_operator_reconciles_total", &[]) - reconciles_before;
    println!("idle window 20 s: {reconciles} reconciles, {writes} writes");
    assert!(
        reconciles >= 3.0,
        "the resync did not run ({reconciles} reconciles): the window proves nothing"
    );
    assert_eq!(
        writes,
        0,
        "an idle operator wrote {writes} times; see {}",
        op.log.display()
    );
}
