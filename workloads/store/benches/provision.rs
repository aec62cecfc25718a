//! What provisioning a tenant database costs: one tenant, then 100 in a row, each a database
//! and two roles with their rights and the migrations step — beside a bare `CREATE DATABASE`
//! from template0 in the same run (the floor: PostgreSQL copying a database). Prints figures;
//! no pass/fail. `make bench-store` (needs PostgreSQL: it starts one).

use std::time::{Duration, Instant};

use sqlx::PgPool;
use xin_store::provision::{Admin, TenantDatabase, new_password};

fn uid() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn stats(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let total: Duration = v.iter().sum();
    (
        ms(total) / v.len() as f64,
        ms(v[v.len() / 2]),
        ms(v[(v.len() * 95 / 100).min(v.len() - 1)]),
    )
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("XIN_BENCH_PROVISION")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let url = xin_store::test_admin_url();
    let admin = Admin::new(&url).unwrap();
    let raw = PgPool::connect(&url).await.unwrap();
    println!(
        "bench-store: provisioning {n} tenant databases in a row (PostgreSQL on this machine)"
    );

    // The floor: a bare database copied from template0, then dropped.
    let mut floor = vec![];
    for _ in 0..n {
        let name = format!("xin_floor_{}", &uid()[..16]);
        let t = Instant::now();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE {name} TEMPLATE template0"
        )))
        .execute(&raw)
        .await
        .unwrap();
        floor.push(t.elapsed());
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {name}")))
            .execute(&raw)
            .await
            .unwrap();
    }

    let one = TenantDatabase::for_uid(&uid()).unwrap();
    let t = Instant::now();
    admin.ensure(&one, &new_password(), "bench").await.unwrap();
    let first = t.elapsed();
    let t = Instant::now();
    admin.ensure(&one, &new_password(), "bench").await.unwrap();
    let again = t.elapsed();

    let mut each = vec![];
    let mut made = vec![one];
    let all = Instant::now();
    for _ in 0..n {
        let db = TenantDatabase::for_uid(&uid()).unwrap();
        let t = Instant::now();
        admin.ensure(&db, &new_password(), "bench").await.unwrap();
        each.push(t.elapsed());
        made.push(db);
    }
    let all = all.elapsed();
    let t = Instant::now();
    for db in &made {
        admin.drop(db).await.unwrap();
    }
    let dropped = t.elapsed();

    let (fm, f50, f95) = stats(floor);
    let (pm, p50, p95) = stats(each);
    println!("| what | mean ms | p50 ms | p95 ms |");
    println!("| --- | ---: | ---: | ---: |");
    println!("| baseline: CREATE DATABASE … TEMPLATE template0 | {fm:.1} | {f50:.1} | {f95:.1} |");
    println!(
        "| one tenant: database, two roles, rights, migrations | {pm:.1} | {p50:.1} | {p95:.1} |"
    );
    println!(
        "first tenant {:.1} ms; the same tenant again (nothing to create, migrations already applied) {:.1} ms",
        first.as_secs_f64() * 1000.0,
        again.as_secs_f64() * 1000.0
    );
    println!(
        "{n} tenants in a row: {:.2} s ({:.2}x the floor's mean per tenant); dropping {} databases and their roles: {:.2} s",
        all.as_secs_f64(),
        pm / fm,
        made.len(),
        dropped.as_secs_f64()
    );
}
