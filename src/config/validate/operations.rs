//! `notify:` (outbound webhooks) and `journal:` (rotation of the hash-chained
//! decision journal).

use super::{Problems, resolve};
use crate::config::raw::{RawConfig, RawNotify};
use std::path::Path;
use std::time::Duration;

pub(super) fn compile_notify(
    n: &RawNotify,
    path: &str,
    base: &Path,
    p: &mut Problems,
) -> Option<crate::config::NotifySink> {
    use crate::config::{NotifyEvent, NotifyFormat};
    let (tls, rest) = match (n.url.strip_prefix("https://"), n.url.strip_prefix("http://")) {
        (Some(r), _) => (true, r),
        (None, Some(r)) => (false, r),
        _ => {
            p.at(format!("{path}.url"), "must start with http:// or https://");
            return None;
        }
    };
    let (hostport, rest_path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if hostport.is_empty() || hostport.contains('@') {
        p.at(format!("{path}.url"), "needs a host (and no user:password@)");
        return None;
    }
    let (host, port) = crate::headers::split_port(hostport);
    let port = match port.map(str::parse::<u16>) {
        None => {
            if tls {
                443
            } else {
                80
            }
        }
        Some(Ok(p)) => p,
        Some(Err(_)) => {
            p.at(format!("{path}.url"), "invalid port");
            return None;
        }
    };
    let format = match n.format.as_deref() {
        None | Some("json") => NotifyFormat::Json,
        Some("slack") => NotifyFormat::Slack,
        Some("teams") => NotifyFormat::Teams,
        Some(other) => {
            p.at(format!("{path}.format"), format!("`{other}`: use json, slack or teams"));
            NotifyFormat::Json
        }
    };
    let events = match &n.events {
        // Steps are routine; everything else is worth a message by default.
        None => NotifyEvent::ALL.into_iter().filter(|e| *e != NotifyEvent::Step).collect(),
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, e)| {
                let found = NotifyEvent::ALL.into_iter().find(|k| k.as_str() == e);
                if found.is_none() {
                    p.at(
                        format!("{path}.events[{i}]"),
                        format!("`{e}`: use rollback, hold, promoted, step, kill or config_refused"),
                    );
                }
                found
            })
            .collect(),
    };
    Some(crate::config::NotifySink {
        name: n.name.clone().unwrap_or_else(|| host.to_owned()),
        url: n.url.split('?').next().unwrap_or_default().to_owned(),
        tls,
        authority: format!("{host}:{port}"),
        host: host.trim_start_matches('[').trim_end_matches(']').to_owned(),
        path: if rest_path.is_empty() { "/".to_owned() } else { rest_path.to_owned() },
        format,
        events,
        token_file: n.token_file.as_deref().map(|f| resolve(base, f)),
        timeout: p.duration(&format!("{path}.timeout"), n.timeout.as_ref(), Duration::from_secs(5)),
    })
}

pub(super) fn compile_journal(raw: &RawConfig, p: &mut Problems) -> crate::config::JournalRotation {
    let d = crate::config::JournalRotation::default();
    let Some(j) = &raw.journal else { return d };
    let max_bytes = p.size("journal.rotate_size", j.rotate_size.as_ref(), d.max_bytes);
    if max_bytes < 64 * 1024 {
        p.at("journal.rotate_size", "at least 64KiB (a journal line can be a few KiB)");
    }
    let max_age =
        j.rotate_age.as_ref().map(|_| p.duration("journal.rotate_age", j.rotate_age.as_ref(), Duration::ZERO));
    if max_age.is_some_and(|a| a < Duration::from_secs(60)) {
        p.at("journal.rotate_age", "at least 1m");
    }
    crate::config::JournalRotation { max_bytes, max_age }
}
