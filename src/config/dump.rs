//! A [`Config`] written back as a config file: what `GET /config` and
//! `--dump-config` print.
//!
//! Owns the conversion of a validated configuration into the file's raw
//! form (`raw.rs`'s structs, which serialize as they deserialize) with
//! every default written out: durations as the file writes them (`"3s"`),
//! policies and other choices by their names, host names as host names.
//! Parsing the text again gives an equal `Config` (host names looked up
//! again). The admin token is never written. Pure: no I/O.

use ron::ser::PrettyConfig;

use super::super::duration::format_duration;
use super::super::health::RawHealth;
use super::super::limits::{RawQueue, RawRate};
use super::super::logs::RawSyslog;
use super::super::routes::RawRoute;
use super::super::udp::RawUdp;
use super::super::{
    BackendConfig, Config, Global, HealthConfig, ListenerConfig, PoolConfig, Protocol, Timeouts,
};
use super::{RawAdmin, RawBackend, RawConfig, RawGlobal, RawListener, RawPool, RawTimeouts};

impl RawAdmin {
    /// No admin listener: the section is left out.
    pub(super) fn is_off(&self) -> bool {
        self.bind.is_none()
    }
}

impl Config {
    /// This configuration as a config file (RON), every default written
    /// out, which [`Config::parse`] reads back to an equal configuration.
    /// `admin.token` is left out, with a comment saying so when one is set.
    pub fn dump(&self) -> Result<String, String> {
        let pretty = PrettyConfig::new()
            .struct_names(false)
            .indentor("    ".to_string());
        let text = ron::ser::to_string_pretty(&raw(self), pretty)
            .map_err(|e| format!("cannot write the configuration as RON: {e}"))?;
        let token = self.admin.as_ref().is_some_and(|a| a.token.is_some());
        let note = if token {
            "// admin.token is set but never shown: add it back before using this file.\n"
        } else {
            ""
        };
        Ok(format!("{note}{text}\n"))
    }
}

fn raw(config: &Config) -> RawConfig {
    // Taken apart field by field, so that a new field cannot be forgotten.
    let Config {
        global,
        timeouts,
        listeners,
        pools,
        admin,
    } = config;
    let Timeouts {
        connect,
        idle,
        drain,
    } = timeouts;
    RawConfig {
        global: raw_global(global),
        timeouts: RawTimeouts {
            connect: format_duration(*connect),
            idle: format_duration(*idle),
            drain: format_duration(*drain),
        },
        listeners: listeners.iter().map(raw_listener).collect(),
        pools: pools.iter().map(raw_pool).collect(),
        admin: RawAdmin {
            bind: admin.as_ref().map(|a| a.bind.to_string()),
            token: None,
        },
    }
}

fn raw_global(global: &Global) -> RawGlobal {
    let Global {
        workers,
        buffer_size,
        log_level,
        access_log,
        access_log_file,
        access_log_format,
        syslog,
        retries,
        zero_copy,
        user,
        group,
    } = global;
    RawGlobal {
        workers: *workers,
        buffer_size: *buffer_size,
        log_level: log_level.as_str().to_ascii_lowercase(),
        access_log: *access_log,
        access_log_file: access_log_file
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned()),
        access_log_format: access_log_format.name().to_string(),
        syslog: syslog.as_ref().map(RawSyslog::from_config),
        retries: *retries,
        zero_copy: zero_copy.as_str().to_string(),
        user: user.clone(),
        group: group.clone(),
    }
}

fn raw_listener(listener: &ListenerConfig) -> RawListener {
    let strings = |items: &[crate::acl::Cidr]| items.iter().map(ToString::to_string).collect();
    let limits = &listener.limits;
    let udp = &listener.udp;
    RawListener {
        name: Some(listener.name.clone()),
        bind: listener.bind.clone(),
        pool: listener.pool.clone(),
        protocol: listener.protocol.name().to_string(),
        udp: (listener.protocol == Protocol::Udp).then(|| RawUdp {
            idle_timeout: format_duration(udp.idle_timeout),
            responses: udp.responses,
            requests: udp.requests,
            key: udp.key.name().to_string(),
            max_flows: udp.max_flows,
        }),
        accept_proxy: listener.accept_proxy.is_some(),
        proxy_timeout: listener.accept_proxy.map(format_duration),
        allow: strings(&limits.acl.allow),
        deny: strings(&limits.acl.deny),
        max_connections: limits.max_connections,
        max_connections_per_ip: limits.max_connections_per_ip,
        rate_per_ip: limits.rate_per_ip.map(|r| RawRate {
            per_second: r.per_second,
            burst: Some(r.burst),
        }),
        routes: listener
            .routing
            .routes
            .iter()
            .map(|route| RawRoute {
                name: Some(route.name.clone()),
                sni: route
                    .conditions
                    .sni
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                alpn: route
                    .conditions
                    .alpn
                    .iter()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect(),
                source: strings(&route.conditions.source),
                pool: route.pool.clone(),
            })
            .collect(),
        inspect_timeout: Some(format_duration(listener.routing.inspect_timeout)),
    }
}

fn raw_pool(pool: &PoolConfig) -> RawPool {
    RawPool {
        name: pool.name.clone(),
        policy: pool.policy.name().to_string(),
        backends: pool.backends.iter().map(raw_backend).collect(),
        health: raw_health(&pool.health),
        resolve_every: pool.resolve_every.map(format_duration),
        send_proxy: pool.send_proxy.map(|v| v.name().to_string()),
        queue: RawQueue {
            size: pool.queue.size,
            timeout: format_duration(pool.queue.timeout),
        },
    }
}

fn raw_backend(backend: &BackendConfig) -> RawBackend {
    RawBackend {
        address: backend.label(),
        weight: backend.weight,
        max_connections: backend.max_connections,
        backup: backend.backup,
    }
}

fn raw_health(health: &HealthConfig) -> RawHealth {
    // Each byte is the character of the same number, as the file reads it.
    let text = |bytes: &Vec<u8>| bytes.iter().copied().map(char::from).collect();
    RawHealth {
        enabled: health.enabled,
        interval: format_duration(health.interval),
        timeout: Some(format_duration(health.timeout)),
        rise: health.rise,
        fall: health.fall,
        jitter: health.jitter,
        send: health.send.as_ref().map(text),
        expect: health.expect.as_ref().map(text),
        initial_state: health.initial_state.name().to_string(),
        passive_failures: health.passive_failures,
        when_all_down: health.when_all_down.name().to_string(),
        slow_start: format_duration(health.slow_start),
    }
}

#[cfg(test)]
#[path = "dump_tests.rs"]
mod tests;
