//! `cargo run -p edgemq-config --example check -- DIR`: prints every diagnostic of a folder.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: check DIR");
        return ExitCode::from(2);
    };
    match edgemq_config::load_dir(&dir) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                println!("{w}");
            }
            println!("ok: {} listener(s)", loaded.config.listeners.len());
            ExitCode::SUCCESS
        }
        Err(diags) => {
            for d in &diags {
                println!("{d}");
            }
            ExitCode::FAILURE
        }
    }
}
