//! README.md as a newcomer runs it: every `sh` block, in order, in one empty folder, with
//! `edgemq` on the PATH. A block's commands run as written, with four stand-ins for what a
//! person does by hand:
//! - `edgemq serve …` (and the quick start's `cargo run --release -p edgemq -- serve`) runs in
//!   the background, after stopping the previous broker, until it logs `ready`;
//! - `mosquitto_sub … &` is started with `-d` and waited for until its SUBACK arrives, its
//!   output kept in `sub-N.out`;
//! - `mosquitto_pub …` is retried (bounded) while the port it names is not up yet (a broker
//!   that is still reloading a folder it watches);
//! - `scripts/test` is this test run itself and is skipped.
//!
//! The test then checks what a person would look at: what each subscriber printed and what
//! the tools answered.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed assertion

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use edgemq_testkit::broker::run_with_timeout;

/// The `sh` blocks of a Markdown text, in order.
fn sh_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(_), "```") => blocks.push(current.take().unwrap()),
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// One block as the harness runs it (see the module comment).
fn stand_ins(block: &str) -> String {
    let mut out = String::new();
    let mut heredoc: Option<String> = None;
    // Continuation lines are joined so a command is transformed whole.
    let joined = block.replace("\\\n", " ");
    for line in joined.lines() {
        if let Some(end) = &heredoc {
            if line == end {
                heredoc = None;
            }
            out.push_str(line);
            out.push('\n');
            continue;
        }
        if let Some(i) = line.find("<<'") {
            let tag = &line[i + 3..];
            heredoc = tag.find('\'').map(|j| tag[..j].to_string());
        }
        let code = line.split(" #").next().unwrap_or("").trim_end();
        let run = if let Some(args) = code.strip_prefix("cargo run --release -p edgemq -- serve") {
            format!("__serve{args}")
        } else if let Some(args) = code.strip_prefix("edgemq serve") {
            format!("__serve{args}")
        } else if code == "scripts/test" {
            ": scripts/test is this test run".to_string()
        } else if let Some(args) = code
            .strip_prefix("mosquitto_sub")
            .and_then(|a| a.strip_suffix('&'))
        {
            format!("__sub{args}")
        } else if let Some(args) = code.strip_prefix("mosquitto_pub") {
            format!("__pub{args}")
        } else {
            line.to_string()
        };
        out.push_str(&run);
        out.push('\n');
    }
    out
}

const PRELUDE: &str = r#"set -euo pipefail
BROKER=; B=0; S=0
__stop() {
  if [ -n "$BROKER" ]; then kill "$BROKER" 2>/dev/null || true; wait "$BROKER" 2>/dev/null || true; BROKER=; fi
}
trap '__stop; kill $(jobs -p) 2>/dev/null || true' EXIT
__serve() {
  __stop; B=$((B+1))
  edgemq serve "$@" 2> "broker-$B.log" & BROKER=$!
  for _ in $(seq 600); do
    grep -q "ready: every listener is bound" "broker-$B.log" && return 0
    kill -0 "$BROKER" 2>/dev/null || break
    sleep 0.05
  done
  echo "edgemq serve $* did not get ready:"; cat "broker-$B.log"; return 1
}
__sub() {
  S=$((S+1))
  stdbuf -oL mosquitto_sub "$@" -d > "sub-$S.out" 2>&1 &
  for _ in $(seq 600); do grep -q SUBACK "sub-$S.out" && return 0; sleep 0.05; done
  echo "mosquitto_sub $* never subscribed:"; cat "sub-$S.out"; return 1
}
__pub() {
  for _ in $(seq 200); do mosquitto_pub "$@" && return 0; sleep 0.05; done
  echo "mosquitto_pub $* kept failing"; return 1
}
"#;

/// Wait until `file` contains `needle` (subscribers print asynchronously).
fn wait_for_text(file: &Path, needle: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if text.contains(needle) || std::time::Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn every_readme_command_sequence_runs_as_written() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let blocks = sh_blocks(&readme);
    assert!(blocks.len() >= 7, "README sh blocks: {}", blocks.len());
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_edgemq"), bin.join("edgemq")).unwrap();
    let mut script = PRELUDE.to_string();
    for (i, block) in blocks.iter().enumerate() {
        script.push_str(&format!("echo '== README block {}'\n", i + 1));
        script.push_str(&stand_ins(block));
    }
    std::fs::write(dir.path().join("readme.sh"), &script).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let (code, out, err) = run_with_timeout(
        Command::new("bash")
            .arg("readme.sh")
            .current_dir(dir.path())
            .env("PATH", path)
            .env_remove("RUST_LOG"),
        Duration::from_secs(240),
    );
    let transcript = format!("{out}\n--- stderr\n{err}");
    assert_eq!(code, Some(0), "README commands failed:\n{transcript}");

    // What a person would look at.
    let quick = wait_for_text(&dir.path().join("sub-1.out"), "sensors/t1 21.5");
    assert!(
        quick.contains("sensors/t1 21.5"),
        "quick start subscriber:\n{quick}"
    );
    let seed = dir.path().join("sub-2.out");
    for line in ["seed/hello hi", "seed/default hi", "seed/x509 hi"] {
        let got = wait_for_text(&seed, line);
        assert!(
            got.contains(line),
            "seed subscriber missing {line:?}:\n{got}"
        );
    }
    assert!(
        out.contains("\"hash\": \"$pbkdf2-sha512$i=210000,l=64$"),
        "{transcript}"
    );
    assert!(out.contains("allowed"), "authz explain:\n{transcript}");
    // Observe and operate: the overview and the metrics count the publish.
    assert!(out.contains("1 received"), "edgemq status:\n{transcript}");
    assert!(
        out.contains("aio_broker_publishes_received{hostname="),
        "metrics:\n{transcript}"
    );
    assert!(out.contains("\"clients\":"), "admin API:\n{transcript}");
    let ca = std::fs::read_to_string(dir.path().join("broker-ca.crt")).unwrap();
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
}

#[test]
fn stand_ins_leave_heredocs_and_comments_alone() {
    let block = "cat > f <<'EOF'\nedgemq serve inside\nEOF\nedgemq serve --config d   # run it\nmosquitto_sub -t x -v &\nscripts/test\n";
    assert_eq!(
        stand_ins(block),
        "cat > f <<'EOF'\nedgemq serve inside\nEOF\n__serve --config d\n__sub -t x -v \n: scripts/test is this test run\n"
    );
}
