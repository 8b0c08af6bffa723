//! voice-router's configuration, parsed once per isolate (vars and secrets do not change within
//! one; a deploy or a new secret starts new isolates).

use std::cell::OnceCell;
use std::rc::Rc;

use shared::call_session::SessionLimits;
use shared::edge_config::{EdgeConfig, EdgeConfigError};
use worker::Env;

thread_local! {
    static CONFIG: OnceCell<Result<Rc<EdgeConfig>, EdgeConfigError>> = const { OnceCell::new() };
}

/// The isolate's configuration.
pub fn load(env: &Env) -> Result<Rc<EdgeConfig>, EdgeConfigError> {
    CONFIG.with(|cell| {
        cell.get_or_init(|| {
            EdgeConfig::from_lookup(|name| edge_io::config::lookup(env, name)).map(Rc::new)
        })
        .clone()
    })
}

/// Call time limits; the defaults when the configuration is broken (the call must still end).
pub fn session_limits(env: &Env) -> SessionLimits {
    load(env).map_or_else(|_| SessionLimits::default(), |config| config.session_limits)
}
