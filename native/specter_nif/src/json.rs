//! `Specter.JSON`: JSON text ⇄ Elixir terms (hex.pm, and so Jason, is not available), and the
//! JSON-shaped inputs of the other modules (session descriptions, candidates), which may be
//! given as JSON text or as maps with string or atom keys.

use rustler::types::tuple::get_tuple;
use rustler::{Encoder, Env, Term, TermType};
use serde_json::{Map, Number, Value};

use crate::atoms;
use crate::error::{encode_result, Error, NifResult};

/// Nesting deeper than this is refused (it would only serve to exhaust the stack).
const MAX_DEPTH: usize = 128;

/// Largest input `Specter.JSON` accepts: 64 MiB.
const MAX_JSON: usize = 64 * 1024 * 1024;

/// A JSON value from JSON text (a binary) or from an Elixir term of maps, lists, strings,
/// numbers, booleans and nil. `max` bounds the text (or the strings in the term), in bytes.
pub fn term_to_value(term: Term<'_>, max: usize) -> NifResult<Value> {
    if term.get_type() == TermType::Binary {
        let bin = term.decode::<rustler::Binary<'_>>().map_err(|_| Error::InvalidJson)?;
        if bin.len() > max {
            return Err(Error::TooLarge);
        }
        return serde_json::from_slice(bin.as_slice()).map_err(|_| Error::InvalidJson);
    }
    let mut budget = max;
    convert(term, 0, &mut budget)
}

fn spend(budget: &mut usize, n: usize) -> NifResult<()> {
    *budget = budget.checked_sub(n).ok_or(Error::TooLarge)?;
    Ok(())
}

fn key_string(term: Term<'_>) -> NifResult<String> {
    match term.get_type() {
        TermType::Binary => term.decode::<String>().map_err(|_| Error::InvalidJson),
        TermType::Atom => term.atom_to_string().map_err(|_| Error::InvalidJson),
        _ => Err(Error::InvalidJson),
    }
}

fn convert(term: Term<'_>, depth: usize, budget: &mut usize) -> NifResult<Value> {
    if depth > MAX_DEPTH {
        return Err(Error::InvalidJson);
    }
    spend(budget, 1)?;
    match term.get_type() {
        TermType::Atom => {
            if term == atoms::nil().encode(term.get_env()) {
                Ok(Value::Null)
            } else if let Ok(b) = term.decode::<bool>() {
                Ok(Value::Bool(b))
            } else {
                let s = term.atom_to_string().map_err(|_| Error::InvalidJson)?;
                spend(budget, s.len())?;
                Ok(Value::String(s))
            }
        }
        TermType::Binary => {
            let s = term.decode::<String>().map_err(|_| Error::InvalidJson)?;
            spend(budget, s.len())?;
            Ok(Value::String(s))
        }
        TermType::Integer => {
            if let Ok(i) = term.decode::<i64>() {
                Ok(Value::Number(i.into()))
            } else if let Ok(u) = term.decode::<u64>() {
                Ok(Value::Number(u.into()))
            } else {
                Err(Error::InvalidJson)
            }
        }
        TermType::Float => {
            let f = term.decode::<f64>().map_err(|_| Error::InvalidJson)?;
            Number::from_f64(f).map(Value::Number).ok_or(Error::InvalidJson)
        }
        TermType::List => {
            // rustler's list iterator panics on an improper list (`[1 | 2]`): only a list
            // whose length the VM can count is walked.
            term.list_length().map_err(|_| Error::InvalidJson)?;
            let items: Vec<Term<'_>> = term.decode().map_err(|_| Error::InvalidJson)?;
            items
                .into_iter()
                .map(|t| convert(t, depth + 1, budget))
                .collect::<NifResult<Vec<_>>>()
                .map(Value::Array)
        }
        TermType::Map => {
            let mut out = Map::new();
            let iter = rustler::types::map::MapIterator::new(term).ok_or(Error::InvalidJson)?;
            for (k, v) in iter {
                let key = key_string(k)?;
                spend(budget, key.len())?;
                out.insert(key, convert(v, depth + 1, budget)?);
            }
            Ok(Value::Object(out))
        }
        TermType::Tuple => {
            // Keyword-style pairs are not JSON; refuse rather than guess.
            let _ = get_tuple(term);
            Err(Error::InvalidJson)
        }
        _ => Err(Error::InvalidJson),
    }
}

/// An Elixir term for a JSON value: maps with string keys, lists, binaries, numbers,
/// booleans, nil.
pub fn value_to_term<'a>(env: Env<'a>, value: &Value) -> Term<'a> {
    match value {
        Value::Null => atoms::nil().encode(env),
        Value::Bool(b) => b.encode(env),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.encode(env)
            } else if let Some(u) = n.as_u64() {
                u.encode(env)
            } else {
                n.as_f64().unwrap_or(0.0).encode(env)
            }
        }
        Value::String(s) => s.as_str().encode(env),
        Value::Array(items) => {
            items.iter().map(|v| value_to_term(env, v)).collect::<Vec<_>>().encode(env)
        }
        Value::Object(obj) => {
            let mut map = rustler::types::map::map_new(env);
            for (k, v) in obj {
                map = map.map_put(k.as_str().encode(env), value_to_term(env, v)).unwrap_or(map);
            }
            map
        }
    }
}

#[rustler::nif(schedule = "DirtyCpu")]
fn json_decode<'a>(env: Env<'a>, text: Term<'a>) -> Term<'a> {
    let res = (|| {
        if text.get_type() != TermType::Binary {
            return Err(Error::InvalidArgument("json"));
        }
        let value = term_to_value(text, MAX_JSON)?;
        Ok((atoms::ok(), value_to_term(env, &value)))
    })();
    encode_result(env, res)
}

#[rustler::nif(schedule = "DirtyCpu")]
fn json_encode<'a>(env: Env<'a>, term: Term<'a>) -> Term<'a> {
    let res = (|| {
        let mut budget = MAX_JSON;
        let value = convert(term, 0, &mut budget)?;
        let text = serde_json::to_string(&value).map_err(|_| Error::InvalidJson)?;
        Ok((atoms::ok(), text))
    })();
    encode_result(env, res)
}
