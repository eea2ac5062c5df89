//! Logging set-up: level from `--log-level`, else from the `Broker` resource's
//! `diagnostics.logs.level` (applied when the configuration loads and on every reload),
//! else `info`.

use std::io::IsTerminal;
use std::sync::{Mutex, OnceLock};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry};

/// The installed filter, swappable while running (set once at start).
static FILTER: OnceLock<Control> = OnceLock::new();

struct Control {
    handle: reload::Handle<EnvFilter, Registry>,
    /// `--log-level` was given: it wins over the configuration.
    explicit: bool,
    current: Mutex<String>,
}

/// A level (`info`) or an EnvFilter directive. rustls reports peers' protocol quirks at
/// warn (every mosquitto client sends its IP address as SNI) and the listener logs
/// handshake failures itself: a bare level keeps rustls at error; a directive is taken as
/// given.
fn filter(level: &str) -> Result<EnvFilter, String> {
    let directive = if level.contains(['=', ',']) {
        level.to_string()
    } else {
        format!("{level},rustls=error")
    };
    EnvFilter::try_new(&directive).map_err(|e| format!("log level {level:?}: {e}"))
}

/// Install the global subscriber writing to stderr.
pub fn init(level: Option<&str>, json: bool) -> Result<(), String> {
    let (layer, handle) = reload::Layer::new(filter(level.unwrap_or("info"))?);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let registry = tracing_subscriber::registry().with(layer);
    let installed = if json {
        registry.with(fmt.json()).try_init()
    } else {
        registry.with(fmt).try_init()
    };
    installed.map_err(|e| e.to_string())?;
    let _ = FILTER.set(Control {
        handle,
        explicit: level.is_some(),
        current: Mutex::new(level.unwrap_or("info").to_string()),
    });
    Ok(())
}

/// Apply the configuration's `diagnostics.logs.level` (`None`: back to `info`), unless the
/// command line set the level. A level that does not parse is logged and the current one
/// stays.
pub fn apply_config_level(level: Option<&str>) {
    let Some(control) = FILTER.get() else { return };
    if control.explicit {
        return;
    }
    let wanted = level.unwrap_or("info");
    let Ok(mut current) = control.current.lock() else {
        return;
    };
    if *current == wanted {
        return;
    }
    match filter(wanted) {
        Ok(f) => {
            // Said under the old level, so a change to a quieter one is still announced.
            tracing::info!(from = %*current, to = wanted, "log level set by Broker diagnostics.logs.level");
            if control.handle.reload(f).is_ok() {
                *current = wanted.to_string();
            }
        }
        Err(e) => tracing::warn!("Broker diagnostics.logs.level: {e}; keeping {current}"),
    }
}
