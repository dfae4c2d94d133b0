//! Operating the balancer: the command line, start-up and shutdown, health
//! checks, reloads, binary upgrades, dropping privileges, backend admin
//! states, systemd's notify protocol and watchdog, the admin listener
//! (metrics, stats, the status page), and the logs (rotation, syslog).

mod admin;
mod admin_backends;
mod admin_backends_load;
mod admin_states;
mod check;
mod config_dump;
mod health;
mod lifecycle;
mod log_rotation;
mod packaging;
mod privileges;
mod prometheus_format;
mod reload;
mod reload_listeners;
mod reload_load;
mod soak;
mod status_page;
mod syslog;
mod systemd;
mod top;
mod upgrade;
