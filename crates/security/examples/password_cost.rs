//! How long one PBKDF2-SHA512 verification takes here (the cost of an uncached
//! username/password CONNECT): `cargo run --release -p edgemq-security --example password_cost`.

use std::time::Instant;

use edgemq_security::password::{PasswordHash, DEFAULT_ITERATIONS};

fn main() {
    for iterations in [100_000, DEFAULT_ITERATIONS] {
        let hash = match PasswordHash::new(b"password", iterations) {
            Ok(h) => h,
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        };
        let runs = 20;
        let started = Instant::now();
        let mut ok = 0;
        for _ in 0..runs {
            ok += usize::from(hash.verify(b"password"));
        }
        let each = started.elapsed() / runs;
        println!(
            "i={iterations}: {each:?} per verification ({ok}/{runs} verified; one core: {:.1}/s)",
            1.0 / each.as_secs_f64()
        );
    }
}
