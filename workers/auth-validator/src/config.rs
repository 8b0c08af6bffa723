//! The configuration, parsed once per isolate from vars and secrets. Vars and secrets cannot
//! change under a running isolate (a new deployment starts new isolates), so the first parse
//! holds for its lifetime.

use std::cell::OnceCell;
use std::rc::Rc;

use shared::auth::config::{AuthConfig, ConfigError};
use worker::{Env, console_error};

/// The parsed configuration, or every problem with it.
pub type Loaded = Rc<Result<AuthConfig, ConfigError>>;

thread_local! {
    static CONFIG: OnceCell<Loaded> = const { OnceCell::new() };
}

/// The configuration of this isolate; problems are logged once (names and reasons, no values).
pub fn load(env: &Env) -> Loaded {
    CONFIG.with(|cell| {
        cell.get_or_init(|| {
            let parsed = AuthConfig::from_lookup(|name| edge_io::config::lookup(env, name));
            if let Err(problems) = &parsed {
                console_error!("auth-validator configuration: {problems}");
            }
            Rc::new(parsed)
        })
        .clone()
    })
}
