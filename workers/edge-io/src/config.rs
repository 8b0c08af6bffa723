//! The lookup every Worker hands to its `shared` configuration parser: a var or a secret by name,
//! as text.

use wasm_bindgen::JsValue;
use worker::Env;

/// A var or secret as text: a secret or a string var as it is, a number or a TOML table var as
/// its JSON; `None` when unset. The parser trims it (secrets included, by `shared::config`'s
/// one rule).
pub fn lookup(env: &Env, name: &str) -> Option<String> {
    let value = worker::js_sys::Reflect::get(env, &JsValue::from_str(name)).ok()?;
    if value.is_undefined() || value.is_null() {
        return None;
    }
    value
        .as_string()
        .or_else(|| worker::js_sys::JSON::stringify(&value).ok()?.as_string())
}
