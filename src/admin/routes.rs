//! What the admin listener answers: the status page, `/metrics`, `/stats`,
//! the running configuration (`/config`) and the runtime actions.
//!
//! Owns routing, the permission check for actions, and the actions
//! themselves: drain, disable or enable a backend (its operator state, an
//! atomic), set a backend's weight or a pool's policy, add or remove a
//! backend (a new snapshot, published like a reload). It runs on the admin
//! thread and acts through `Shared`, whose publishing lock orders each
//! action wholly before or after a reload; it never touches a reactor.

use std::net::SocketAddr;
use std::sync::Arc;

use log::info;
use parking_lot::Mutex;

use super::http::{Request, Response};
use super::query::Query;
use super::render;
use super::view::{Sampler, View};
use crate::backend::Admin;
use crate::config::PolicyKind;
use crate::health::HealthStats;
use crate::metrics::events;
use crate::metrics::text::CONTENT_TYPE;
use crate::registry::{ActionError, NewBackend, Shared};

const STATUS_PAGE: &str = include_str!("status.html");

#[derive(Debug)]
pub(crate) struct Routes {
    pub shared: Arc<Shared>,
    pub health: Arc<HealthStats>,
    pub sampler: Arc<Mutex<Sampler>>,
    /// Actions need `Authorization: Bearer TOKEN` when set; without it,
    /// they are allowed from loopback clients only.
    pub token: Option<String>,
}

impl Routes {
    pub(crate) fn handle(&self, request: &Request<'_>) -> Response {
        match (request.method, request.path) {
            ("GET" | "HEAD", "/") => Response::html(200, STATUS_PAGE),
            ("GET" | "HEAD", "/metrics") => {
                let view = View::read(&self.shared, &self.health);
                Response::new(200, CONTENT_TYPE, render::prometheus(&view))
            }
            ("GET" | "HEAD", "/stats") => {
                let view = View::read(&self.shared, &self.health);
                let body = render::stats(&view, &self.sampler.lock(), &events::recent());
                Response::json(200, body)
            }
            ("GET" | "HEAD", "/config") => match self.allowed(request) {
                Ok(()) => self.running_config(),
                Err(denied) => denied,
            },
            ("GET" | "HEAD", "/history") => Response::json(
                200,
                render::history(
                    &View::read(&self.shared, &self.health),
                    &self.sampler.lock(),
                    self.token.is_some(),
                ),
            ),
            ("POST", path) if path.starts_with("/backend/") || path == "/pool/policy" => {
                match self.allowed(request) {
                    Ok(()) => self.act(request),
                    Err(denied) => denied,
                }
            }
            (_, "/" | "/metrics" | "/stats" | "/config") => {
                Response::text(405, "use GET\n").with_header("Allow", "GET, HEAD")
            }
            (_, path) if path.starts_with("/backend/") || path == "/pool/policy" => {
                Response::text(405, "use POST\n").with_header("Allow", "POST")
            }
            _ => Response::text(
                404,
                "not found; try /, /metrics, /stats, /history or /config\n",
            ),
        }
    }

    /// `GET /config`: the configuration in force, runtime changes
    /// included, as a file `--check` accepts (the admin token left out).
    /// It shows the topology, so it needs the actions' permission.
    fn running_config(&self) -> Response {
        let (snapshot, _) = self.shared.snapshot();
        match snapshot.running_config().dump() {
            Ok(text) => Response::text(200, text),
            Err(e) => Response::text(500, format!("{e}\n")),
        }
    }

    fn allowed(&self, request: &Request<'_>) -> Result<(), Response> {
        match &self.token {
            Some(token) => {
                let given = request
                    .header("authorization")
                    .and_then(|h| h.strip_prefix("Bearer "));
                if given.is_some_and(|g| same(g.trim().as_bytes(), token.as_bytes())) {
                    Ok(())
                } else {
                    Err(Response::text(401, "a valid bearer token is required\n")
                        .with_header("WWW-Authenticate", "Bearer"))
                }
            }
            // IPv4 clients of a dual-stack admin socket arrive as ::ffff:a.b.c.d.
            None if crate::acl::unmapped(request.peer.ip()).is_loopback() => Ok(()),
            None => Err(Response::text(
                403,
                "actions are allowed from loopback only; set admin.token to allow others\n",
            )),
        }
    }

    /// `POST /backend/{drain,disable,enable,weight,remove}?pool=P&backend=ADDR
    /// [&weight=N]`, `POST /backend/add?pool=P&address=ADDR[&weight=N]
    /// [&backup=1]` and `POST /pool/policy?pool=P&policy=NAME`. Values are
    /// percent-decoded; a malformed one is 400, an unknown pool or backend
    /// 404, a change the pool cannot take 409, and none changes anything.
    fn act(&self, request: &Request<'_>) -> Response {
        let outcome = Query::parse(request.query).and_then(|query| {
            let pool = query.get("pool").ok_or("missing pool=NAME")?.to_string();
            Ok((query, pool))
        });
        let outcome = match outcome {
            Ok((query, pool)) => self.dispatch(request.path, &pool, &query),
            Err(why) => Err((400, why)),
        };
        match outcome {
            Ok(done) => {
                let line = format!("admin action from {}: {done}", request.peer);
                info!("{line}");
                events::record(line);
                Response::text(200, format!("{done}\n"))
            }
            Err((status, why)) => Response::text(status, format!("{why}\n")),
        }
    }

    fn dispatch(&self, path: &str, pool: &str, query: &Query) -> Result<String, (u16, String)> {
        let refused = |e: ActionError| (e.status(), e.to_string());
        match path {
            "/pool/policy" => {
                let kind: PolicyKind = query
                    .get("policy")
                    .ok_or((400, "missing policy=NAME".to_string()))?
                    .parse()
                    .map_err(|e| (400, format!("policy=: {e}")))?;
                self.shared.set_policy(pool, kind).map_err(refused)?;
                Ok(format!("pool {pool} policy set to {kind}"))
            }
            "/backend/add" => {
                let new = NewBackend {
                    addr: address(query, "address")?,
                    weight: weight(query.get("weight").unwrap_or("1"))?,
                    backup: flag(query, "backup")?,
                };
                self.shared.add_backend(pool, new).map_err(refused)?;
                let tier = if new.backup { " as a backup" } else { "" };
                Ok(format!(
                    "pool {pool} backend {} added{tier} with weight {}",
                    new.addr, new.weight
                ))
            }
            "/backend/remove" => {
                let addr = address(query, "backend")?;
                self.shared.remove_backend(pool, addr).map_err(refused)?;
                Ok(format!(
                    "pool {pool} backend {addr} removed; its open sessions may finish"
                ))
            }
            "/backend/weight" => {
                let addr = address(query, "backend")?;
                let weight = weight(
                    query
                        .get("weight")
                        .ok_or((400, "missing weight=N".into()))?,
                )?;
                self.shared
                    .set_weight(pool, addr, weight)
                    .map_err(refused)?;
                Ok(format!("pool {pool} backend {addr} weight set to {weight}"))
            }
            path => {
                let admin = match path.trim_start_matches("/backend/") {
                    "drain" => Admin::Drain,
                    "disable" => Admin::Disabled,
                    "enable" => Admin::Enabled,
                    action => return Err((
                        404,
                        format!("unknown action {action:?}; use add, remove, drain, disable, enable or weight"),
                    )),
                };
                let addr = address(query, "backend")?;
                let state = self.shared.set_admin(pool, addr, admin).map_err(refused)?;
                Ok(format!("pool {pool} backend {addr} {}", state.as_str()))
            }
        }
    }
}

/// Parameter `name` as a backend address: `IP:PORT`, IPv6 in brackets,
/// port not 0. Host names are refused: resolving one would hold up the
/// admin thread, and it would not be re-resolved like a file's.
fn address(query: &Query, name: &str) -> Result<SocketAddr, (u16, String)> {
    let text = query
        .get(name)
        .ok_or_else(|| (400, format!("missing {name}=IP:PORT")))?;
    match text.parse::<SocketAddr>() {
        Ok(addr) if addr.port() != 0 => Ok(addr),
        _ => Err((
            400,
            format!("{name}= must be IP:PORT with a port above 0 (IPv6 in brackets, e.g. [::1]:80), not {text:?}"),
        )),
    }
}

fn weight(text: &str) -> Result<u32, (u16, String)> {
    text.parse()
        .ok()
        .filter(|w| *w <= crate::config::MAX_WEIGHT)
        .ok_or_else(|| (400, format!("weight= must be 0 to 10000, not {text:?}")))
}

/// `name=1`/`true` or `0`/`false`; absent is false.
fn flag(query: &Query, name: &str) -> Result<bool, (u16, String)> {
    match query.get(name) {
        None | Some("0" | "false") => Ok(false),
        Some("1" | "true") => Ok(true),
        Some(other) => Err((400, format!("{name}= must be 1 or 0, not {other:?}"))),
    }
}

/// `a == b` in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn token_comparison_needs_every_byte_and_the_length_to_match() {
        assert!(same(b"s3cret", b"s3cret"));
        assert!(same(b"", b""));
        assert!(!same(b"s3cret", b"s3creT"));
        assert!(!same(b"X3cret", b"s3cret"));
        assert!(!same(b"s3cre", b"s3cret"));
        assert!(!same(b"s3cret!", b"s3cret"));
    }
}
