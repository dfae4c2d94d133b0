//! What the admin listener answers: the status page, `/metrics`, `/stats`
//! and the runtime actions.
//!
//! Owns routing, the permission check for actions, and the actions
//! themselves: drain, disable or enable a backend (its operator state, an
//! atomic), set a backend's weight or a pool's policy (a new snapshot,
//! published like a reload). It runs on the admin thread and acts through
//! `Shared`, whose publishing lock orders each action wholly before or
//! after a reload; it never touches a reactor.

use std::net::SocketAddr;
use std::sync::Arc;

use log::info;
use parking_lot::Mutex;

use super::http::{Request, Response};
use super::render;
use super::view::{Sampler, View};
use crate::backend::Admin;
use crate::config::PolicyKind;
use crate::health::HealthStats;
use crate::metrics::events;
use crate::metrics::text::CONTENT_TYPE;
use crate::registry::Shared;

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
            (_, "/" | "/metrics" | "/stats") => {
                Response::text(405, "use GET\n").with_header("Allow", "GET, HEAD")
            }
            (_, path) if path.starts_with("/backend/") || path == "/pool/policy" => {
                Response::text(405, "use POST\n").with_header("Allow", "POST")
            }
            _ => Response::text(404, "not found; try /, /metrics or /stats\n"),
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

    /// `POST /backend/{drain,disable,enable,weight}?pool=P&backend=ADDR
    /// [&weight=N]` and `POST /pool/policy?pool=P&policy=NAME`.
    fn act(&self, request: &Request<'_>) -> Response {
        let query = Query(request.query);
        let Some(pool) = query.get("pool") else {
            return Response::text(400, "missing pool=NAME\n");
        };
        let who = request.peer;
        let outcome = match request.path {
            "/pool/policy" => self.set_policy(pool, query.get("policy")),
            path => {
                let action = path.trim_start_matches("/backend/");
                let backend = query.get("backend").map(str::parse::<SocketAddr>);
                match backend {
                    Some(Ok(addr)) => self.backend_action(pool, addr, action, query.get("weight")),
                    Some(Err(_)) => Err((400, "backend= must be IP:PORT".into())),
                    None => Err((400, "missing backend=IP:PORT".into())),
                }
            }
        };
        match outcome {
            Ok(done) => {
                let line = format!("admin action from {who}: {done}");
                info!("{line}");
                events::record(line);
                Response::text(200, format!("{done}\n"))
            }
            Err((status, why)) => Response::text(status, format!("{why}\n")),
        }
    }

    fn set_policy(&self, pool: &str, policy: Option<&str>) -> Result<String, (u16, String)> {
        let kind: PolicyKind = policy
            .ok_or((400, "missing policy=NAME".to_string()))?
            .parse()
            .map_err(|e| (400, e))?;
        self.shared.set_policy(pool, kind).map_err(|e| (404, e))?;
        Ok(format!("pool {pool} policy set to {kind}"))
    }

    fn backend_action(
        &self,
        pool: &str,
        addr: SocketAddr,
        action: &str,
        weight: Option<&str>,
    ) -> Result<String, (u16, String)> {
        let admin = match action {
            "drain" => Admin::Drain,
            "disable" => Admin::Disabled,
            "enable" => Admin::Enabled,
            "weight" => {
                let weight: u32 = weight
                    .and_then(|w| w.parse().ok())
                    .filter(|w| *w <= crate::config::MAX_WEIGHT)
                    .ok_or((400, "weight= must be 0 to 10000".to_string()))?;
                self.shared
                    .set_weight(pool, addr, weight)
                    .map_err(|e| (409, e))?;
                return Ok(format!("pool {pool} backend {addr} weight set to {weight}"));
            }
            _ => {
                return Err((
                    404,
                    format!("unknown action {action:?}; use drain, disable, enable or weight"),
                ))
            }
        };
        let state = self
            .shared
            .set_admin(pool, addr, admin)
            .map_err(|e| (404, e))?;
        Ok(format!("pool {pool} backend {addr} {}", state.as_str()))
    }
}

/// `a == b` in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `a=1&b=2`, values taken as written (addresses and names need no
/// percent-decoding).
struct Query<'a>(&'a str);

impl<'a> Query<'a> {
    fn get(&self, key: &str) -> Option<&'a str> {
        self.0
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }
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
