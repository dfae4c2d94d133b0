//! The operator status page (`src/admin/status.html`) in headless Chromium,
//! served with a fixture `/stats` (`tests/fixtures/stats.json`) by a small
//! HTTP server standing in for the admin listener: what the page shows, that
//! names from the configuration stay text, the banner when `/stats` fails,
//! and that a screenshot shows something. Against a running balancer: the
//! five-minute charts drawn from its `/history`, and the backend actions
//! driven through the page as a user would (`cdp`), with and without the
//! admin token typed in.
//!
//! Without a browser, each browser test skips, and fails under `CI=true`
//! (see `support::skip`). `B4_BROWSER` chooses the browser binary.

mod cdp;

use crate::support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use support::browser::{self, png_info, png_is_not_blank, Browser, TempDir};
use support::dom::{Dom, Element};
use support::fixture_http::{FixtureHttp, StatsReply, STATUS_PAGE};

/// Two pools (3 + 2 backends, one down, one draining), two listeners, three
/// events listed oldest first.
const STATS: &str = include_str!("../../fixtures/stats.json");

/// Virtual time a page runs before its DOM is read: it polls at load, then
/// every second, so this covers three polls.
const BUDGET: Duration = Duration::from_millis(2500);

/// A pool and listener name that would be markup if the page parsed it.
const HOSTILE_NAME: &str = "<script>alert(1)</script><em>api</em>";

fn browser() -> Option<Browser> {
    match browser::find() {
        Ok(b) => Some(b),
        Err(reason) => {
            support::skip::skip(&reason, &["chromium"]);
            None
        }
    }
}

/// Serves the page with `stats` and returns the DOM after `BUDGET`.
fn load(browser: &Browser, stats: StatsReply) -> (Dom, FixtureHttp) {
    let server = FixtureHttp::serve(stats);
    let started = Instant::now();
    let html = browser
        .dump_dom(&server.url(), BUDGET)
        .unwrap_or_else(|e| panic!("{}: {e}", browser.version()));
    println!("dump-dom took {:?}", started.elapsed());
    (Dom::parse(&html), server)
}

fn by_id<'a>(dom: &'a Dom, id: &str) -> Element<'a> {
    dom.by_id(id)
        .unwrap_or_else(|| panic!("no element with id {id:?}"))
}

fn backend<'a>(dom: &'a Dom, pool: &str, address: &str) -> Element<'a> {
    let rows = dom.select("tr", "backend");
    rows.into_iter()
        .find(|r| r.attr("data-pool") == Some(pool) && r.attr("data-address") == Some(address))
        .unwrap_or_else(|| panic!("no backend row for pool {pool:?} address {address}"))
}

fn listener<'a>(dom: &'a Dom, name: &str) -> Element<'a> {
    let rows = dom.select("tr", "listener");
    rows.into_iter()
        .find(|r| r.attr("data-name") == Some(name))
        .unwrap_or_else(|| panic!("no listener row named {name:?}"))
}

fn assert_contains(text: &str, wanted: &str) {
    assert!(text.contains(wanted), "{wanted:?} not in {text:?}");
}

#[test]
fn page_shows_header_listeners_backends_and_events_from_stats() {
    let Some(browser) = browser() else { return };
    let (dom, server) = load(&browser, StatsReply::Json(STATS.into()));

    assert_eq!(by_id(&dom, "status").text(), "live");
    assert!(
        by_id(&dom, "banner").attr("hidden").is_some(),
        "banner shown while live"
    );
    assert_eq!(by_id(&dom, "version").text(), "0.1.0");
    assert_eq!(by_id(&dom, "uptime").text(), "1d 2h 3m");
    assert_eq!(by_id(&dom, "reloads").text(), "3 ok, 1 failed");
    assert_eq!(by_id(&dom, "buffers").text(), "14");

    let web = listener(&dom, "web").text();
    for wanted in [
        "0.0.0.0:8080, [::]:8080",
        "1,843,211",
        "37",
        "212.0/s",
        "198.4/s",
    ] {
        assert_contains(&web, wanted);
    }
    assert_contains(&listener(&dom, "api").text(), "12");
    assert_eq!(dom.select("tr", "listener").len(), 2);

    // (pool, address, state, share, 1 s to backend, 1 s from backend)
    let expected = [
        ("web", "127.0.0.1:9001", "up", "33%", "1.3 MB/s", "9.8 MB/s"),
        (
            "web",
            "127.0.0.1:9002",
            "up",
            "33%",
            "1.3 MB/s",
            "10.4 MB/s",
        ),
        ("web", "127.0.0.1:9003", "down", "33%", "0 B/s", "0 B/s"),
        (
            "api",
            "10.0.2.11:7000",
            "up",
            "75%",
            "86.5 kB/s",
            "612.0 kB/s",
        ),
        (
            "api",
            "10.0.2.12:7000",
            "drain",
            "25%",
            "940 B/s",
            "15.3 kB/s",
        ),
    ];
    assert_eq!(dom.select("tr", "backend").len(), expected.len());
    for (pool, address, state, share, sent, received) in expected {
        let row = backend(&dom, pool, address);
        assert_eq!(row.attr("data-state"), Some(state), "{address}");
        let badges = row.select("span", "badge");
        assert_eq!(badges.len(), 1, "{address}: one state badge");
        assert!(
            badges[0].has_class(state),
            "{address}: badge {:?}",
            badges[0].tag
        );
        assert_eq!(badges[0].text(), state);
        let text = row.text();
        for wanted in [address, share, sent, received] {
            assert_contains(&text, wanted);
        }
    }
    assert_contains(&backend(&dom, "web", "127.0.0.1:9003").text(), "9,301 / 69");

    // Newest first, whatever order the server lists them in.
    let events = by_id(&dom, "events").text();
    let at = |needle: &str| {
        events
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not in events {events:?}"))
    };
    let drain = at("pool api backend 10.0.2.12:7000 DRAIN: set by reload");
    let down = at("pool web backend 127.0.0.1:9003 DOWN: connection refused (3/3)");
    let up = at("pool web backend 127.0.0.1:9003 UP: check passed (2/2)");
    assert!(
        drain < down && down < up,
        "events not newest first: {events:?}"
    );

    assert!(server.requests("/stats") >= 2, "the page polled only once");
}

#[test]
fn names_from_config_render_as_text_not_markup() {
    let Some(browser) = browser() else { return };
    let stats = STATS
        .replace("\"api\"", &format!("\"{HOSTILE_NAME}\""))
        .replace("set by reload", "<img src=x onerror=alert(2)>");
    let (dom, _server) = load(&browser, StatsReply::Json(stats));

    assert_eq!(by_id(&dom, "status").text(), "live");
    // The page's own script is the only one; nothing else became an element.
    assert_eq!(dom.elements("script").len(), 1);
    assert!(
        dom.elements("em").is_empty(),
        "a name became an <em> element"
    );
    assert!(
        dom.elements("img").is_empty(),
        "an event became an <img> element"
    );

    let rows = dom.select("tr", "backend");
    let hostile_rows = rows
        .iter()
        .filter(|r| r.attr("data-pool") == Some(HOSTILE_NAME));
    assert_eq!(hostile_rows.count(), 2);
    assert_contains(&listener(&dom, HOSTILE_NAME).text(), HOSTILE_NAME);
    let sections = dom.select("section", "pool");
    let section = sections
        .iter()
        .find(|s| s.attr("data-pool") == Some(HOSTILE_NAME))
        .expect("pool section");
    assert_contains(&section.text(), &format!("Pool {HOSTILE_NAME}"));
    assert_contains(
        &by_id(&dom, "events").text(),
        "DRAIN: <img src=x onerror=alert(2)>",
    );
}

#[test]
fn failing_stats_shows_disconnected_banner_and_keeps_polling() {
    let Some(browser) = browser() else { return };
    let (dom, server) = load(&browser, StatsReply::Status(500));

    assert_eq!(by_id(&dom, "status").text(), "disconnected");
    let banner = by_id(&dom, "banner");
    assert!(banner.attr("hidden").is_none(), "banner hidden");
    let text = banner.text().to_lowercase();
    assert_contains(&text, "disconnected, retrying");
    assert_contains(&text, "http 500");
    assert!(dom.select("tr", "backend").is_empty());
    assert!(server.requests("/stats") >= 2, "the page stopped polling");
}

#[test]
fn screenshot_of_the_page_is_not_blank_and_a_blank_page_is() {
    let Some(browser) = browser() else { return };
    let server = FixtureHttp::serve(StatsReply::Json(STATS.into()));
    let dir = TempDir::new("b4-status-page").unwrap();

    let page = dir.path().join("page.png");
    let started = Instant::now();
    browser.screenshot(&server.url(), &page, 1280, 800).unwrap();
    println!("screenshot took {:?}", started.elapsed());
    let info = png_info(&page).unwrap();
    assert_eq!((info.width, info.height), (1280, 800));
    assert!(
        png_is_not_blank(&page).unwrap(),
        "status page looks blank: {info:?}"
    );

    // The same check on a page with nothing on it.
    let blank = dir.path().join("blank.png");
    browser
        .screenshot("about:blank", &blank, 1280, 800)
        .unwrap();
    let blank_info = png_info(&blank).unwrap();
    assert!(
        !png_is_not_blank(&blank).unwrap(),
        "blank page not blank: {blank_info:?}"
    );
    println!("image data: page {info:?}, blank {blank_info:?}");
}

/// Refreshes the picture in the docs after a change to the page.
#[test]
#[ignore = "writes docs/status-page.png; run by hand after changing the page"]
fn save_docs_screenshot() {
    let browser = browser::find().expect("a browser is needed to update the docs");
    let server = FixtureHttp::serve(StatsReply::Json(STATS.into()));
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/status-page.png");
    browser.screenshot(&server.url(), &path, 1760, 760).unwrap();
    assert!(png_is_not_blank(&path).unwrap());
    println!("wrote {}", path.display());
}

#[test]
fn page_is_self_contained_and_never_parses_data_as_html() {
    for banned in [
        "http://",
        "https://",
        "<link",
        "src=",
        "@import",
        "url(",
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
    ] {
        assert!(
            !STATUS_PAGE.contains(banned),
            "status.html contains {banned:?}"
        );
    }
    assert!(STATUS_PAGE.contains("fetch(\"/stats\""));
}

/// A balancer with two identity backends and an admin listener, after
/// `clients` clients were each served.
fn serving(clients: usize) -> (support::Balancer, [support::Backend; 2], SocketAddr) {
    let backends = [
        support::Backend::identity("a"),
        support::Backend::identity("b"),
    ];
    let admin = support::free_addr();
    let lb = support::Balancer::builder(support::free_addr())
        .backends(&[backends[0].addr(), backends[1].addr()])
        .opt("--admin", &admin.to_string())
        .start();
    for _ in 0..clients {
        let mut s = support::connect(lb.listen);
        support::read_line(&mut s, Duration::from_secs(5)).expect("served");
    }
    (lb, backends, admin)
}

/// The status page of the admin listener at `admin`, after `BUDGET`.
fn live_page(browser: &Browser, admin: SocketAddr) -> Dom {
    let html = browser
        .dump_dom(&format!("http://{admin}/"), BUDGET)
        .unwrap_or_else(|e| panic!("{}: {e}", browser.version()));
    Dom::parse(&html)
}

#[test]
fn a_running_balancer_serves_the_page_with_its_own_backends_and_traffic() {
    let Some(browser) = browser() else { return };
    let (_lb, [a, b], admin) = serving(10);
    let dom = live_page(&browser, admin);
    assert_eq!(by_id(&dom, "status").text(), "live");
    assert_eq!(dom.select("tr", "backend").len(), 2);
    // No admin.token: no token field; the page says who may act instead.
    assert!(
        by_id(&dom, "auth").attr("hidden").is_some(),
        "token field shown"
    );
    let note = by_id(&dom, "loopback-note");
    assert!(note.attr("hidden").is_none(), "loopback note hidden");
    assert_contains(&note.text(), "loopback clients only");
    for backend_addr in [a.addr(), b.addr()] {
        let row = backend(&dom, "default", &backend_addr.to_string());
        assert_eq!(row.attr("data-state"), Some("up"));
        assert_contains(&row.text(), "50%");
    }
    assert_contains(&listener(&dom, "default").text(), "10");
}

/// The `d` of each line in the element's sparkline of `series`.
fn chart_lines(row: &Element<'_>, series: &str) -> Vec<String> {
    let charts = row.select("svg", "spark");
    let chart = charts
        .iter()
        .find(|c| c.attr("data-series") == Some(series))
        .unwrap_or_else(|| panic!("no {series} chart in {:?}", row.text()));
    chart
        .select("path", "line")
        .iter()
        .map(|p| p.attr("d").unwrap_or_default().to_string())
        .collect()
}

/// Whether a sparkline path has at least two points at different heights.
fn rises_or_falls(d: &str) -> bool {
    let ys: Vec<&str> = d
        .split_whitespace()
        .filter_map(|point| point.split_once(',').map(|(_, y)| y))
        .collect();
    ys.len() >= 2 && ys.iter().any(|y| *y != ys[0])
}

#[test]
fn charts_show_each_listener_and_backend_from_the_balancers_history() {
    let Some(browser) = browser() else { return };
    let (_lb, [a, b], admin) = serving(20);
    // Traffic in the first 5 s bucket and none in the next: every line has
    // a high point then a low one, whoever opens the page.
    let closed_bucket = support::wait_until(Duration::from_secs(12), || {
        let body = support::http::get(admin, "/history").body;
        let history: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        history["listeners"][0]["connections"]
            .as_array()
            .is_some_and(|points| points.len() >= 2)
    });
    assert!(closed_bucket, "no closed bucket in /history");
    let dom = live_page(&browser, admin);
    let row = listener(&dom, "default");
    for series in ["connections", "bytes"] {
        let lines = chart_lines(&row, series);
        assert_eq!(lines.len(), 1, "listener {series}: {lines:?}");
        assert!(
            rises_or_falls(&lines[0]),
            "listener {series} flat: {lines:?}"
        );
    }
    for backend_addr in [a.addr(), b.addr()] {
        let row = backend(&dom, "default", &backend_addr.to_string());
        let connections = chart_lines(&row, "connections");
        assert_eq!(connections.len(), 1);
        assert!(
            rises_or_falls(&connections[0]),
            "{backend_addr}: {connections:?}"
        );
        // To the backend (nothing: identity backends only talk) and from it.
        let bytes = chart_lines(&row, "bytes");
        assert_eq!(bytes.len(), 2, "{backend_addr}: {bytes:?}");
        assert!(
            !rises_or_falls(&bytes[0]),
            "{backend_addr}: nothing was sent: {bytes:?}"
        );
        assert!(rises_or_falls(&bytes[1]), "{backend_addr}: {bytes:?}");
    }
}

#[test]
fn drain_pressed_on_the_page_needs_the_typed_token_and_then_drains() {
    let Some(browser) = browser() else { return };
    let (a, b) = (
        support::Backend::identity("a"),
        support::Backend::identity("b"),
    );
    let (listen, admin) = (support::free_addr(), support::free_addr());
    let _lb = support::Balancer::with_config(
        &format!(
            r#"(
    listeners: [(name: "web", bind: "{listen}", pool: "p")],
    pools: [(name: "p", health: (enabled: false), backends: [(address: "{}"), (address: "{}")])],
    admin: (bind: "{admin}", token: "s3cret"),
)"#,
            a.addr(),
            b.addr()
        ),
        listen,
    );
    let state = |address: SocketAddr| {
        let body = support::http::get(admin, "/stats").body;
        let stats: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let backends = stats["pools"][0]["backends"].as_array().unwrap().clone();
        let found = backends
            .into_iter()
            .find(|x| x["address"] == address.to_string());
        found.expect("backend in /stats")["state"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let mut page = cdp::Page::open(browser.program(), &format!("http://{admin}/"))
        .unwrap_or_else(|e| panic!("{}: {e}", browser.version()));
    let ready = "!document.getElementById('auth').hidden && \
                 document.getElementById('loopback-note').hidden && \
                 document.querySelectorAll('tr.backend').length === 2";
    page.wait_for(ready, Duration::from_secs(10)).unwrap();
    let drain = format!(
        "tr.backend[data-address=\"{}\"] button[data-action=\"drain\"]",
        b.addr()
    );
    let result = "document.getElementById('action-result').hidden ? '' : \
                  document.getElementById('action-result').className + ' ' + \
                  document.getElementById('action-result').textContent";

    page.click(&drain).unwrap();
    let shown = page.wait_for(result, Duration::from_secs(5)).unwrap();
    let shown = shown.as_str().unwrap();
    assert!(
        shown.starts_with("failed 401: a valid bearer token is required"),
        "{shown}"
    );
    assert_eq!(
        state(b.addr()),
        "up",
        "an action without the token changed something"
    );

    page.type_into("#token", "s3cret").unwrap();
    let set = "document.getElementById('token-state').textContent.startsWith('set')";
    page.wait_for(set, Duration::from_secs(5)).unwrap();
    assert_eq!(
        page.eval("document.getElementById('token').value").unwrap(),
        "",
        "the token stays in the field"
    );
    assert_eq!(
        page.eval("[document.cookie, localStorage.length, sessionStorage.length]")
            .unwrap(),
        serde_json::json!(["", 0, 0]),
        "the token went into a cookie or storage"
    );
    page.click(&drain).unwrap();
    let ok = format!(
        "({result}).startsWith('ok pool p backend {} drain')",
        b.addr()
    );
    page.wait_for(&ok, Duration::from_secs(5)).unwrap();
    assert_eq!(state(b.addr()), "drain");
    assert_eq!(state(a.addr()), "up");
    let row = format!(
        "document.querySelector('tr.backend[data-address=\"{}\"]').dataset.state === 'drain'",
        b.addr()
    );
    page.wait_for(&row, Duration::from_secs(5)).unwrap();
}
