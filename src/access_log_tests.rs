//! Unit tests of `access_log`: termination codes, both line formats.

use super::*;
use std::time::Duration;

fn code(end: End, stage: Stage) -> String {
    term(end, stage, None).to_string()
}

#[test]
fn every_end_maps_to_its_haproxy_code_in_each_stage() {
    use Stage::*;
    let table = [
        (End::Done, ["--", "--", "--"]),
        (End::ClientReset, ["CC", "CD", "CL"]),
        (End::BackendReset, ["SC", "SD", "SL"]),
        (End::IdleTimeout, ["cC", "cD", "cL"]),
        (End::NoBackend, ["SC", "SC", "SC"]),
        (End::Shutdown, ["KC", "KD", "KL"]),
        (End::Removed, ["KC", "KD", "KL"]),
        (End::QueueFull, ["PC", "PC", "PC"]),
        (End::QueueTimeout, ["sQ", "sQ", "sQ"]),
    ];
    for (end, codes) in table {
        for (stage, want) in [Connect, Data, LastData].into_iter().zip(codes) {
            assert_eq!(code(end, stage), want, "{end:?} in {stage:?}");
        }
    }
}

#[test]
fn a_session_ending_while_queued_says_q() {
    assert_eq!(code(End::ClientReset, Stage::Queue), "CQ");
    assert_eq!(code(End::Shutdown, Stage::Queue), "KQ");
    assert_eq!(code(End::QueueTimeout, Stage::Queue), "sQ");
}

#[test]
fn no_backend_code_names_how_the_last_attempt_failed() {
    let cases = [
        (None, "SC"),
        (Some(ConnectFailure::Refused), "SC"),
        (Some(ConnectFailure::TimedOut), "sC"),
        (Some(ConnectFailure::Local), "RC"),
    ];
    for (failure, want) in cases {
        let got = term(End::NoBackend, Stage::Connect, failure);
        assert_eq!(got.as_str(), want, "{failure:?}");
    }
    // Only a session that found no backend looks at the failure.
    let got = term(
        End::ClientReset,
        Stage::Data,
        Some(ConnectFailure::TimedOut),
    );
    assert_eq!(got.as_str(), "CD");
}

#[test]
fn connect_failures_are_classified_by_cause() {
    let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
    let timed_out = io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
    let no_fds = io::Error::from_raw_os_error(libc::EMFILE);
    let no_port = io::Error::from_raw_os_error(libc::EADDRNOTAVAIL);
    assert_eq!(ConnectFailure::of(&refused), ConnectFailure::Refused);
    assert_eq!(ConnectFailure::of(&timed_out), ConnectFailure::TimedOut);
    assert_eq!(ConnectFailure::of(&no_fds), ConnectFailure::Local);
    assert_eq!(ConnectFailure::of(&no_port), ConnectFailure::Local);
}

fn record(started: Instant) -> Record<'static> {
    Record {
        client: "192.0.2.7:40000".parse().unwrap(),
        listener: "web",
        pool: "app",
        backend: Some("[2001:db8::1]:80".parse().unwrap()),
        bytes_in: 120,
        bytes_out: 4567,
        started,
        connected: Some(started + Duration::from_millis(3)),
        ended: started + Duration::from_millis(1250),
        attempts: 2,
        end: End::ClientReset,
        stage: Stage::Data,
        connect_failure: Some(ConnectFailure::Refused),
        route: None,
        backup: false,
    }
}

fn line(r: &Record<'_>) -> String {
    let mut out = Vec::new();
    r.write_to(&mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn line_has_every_field_as_key_value() {
    let r = record(Instant::now());
    assert_eq!(
        line(&r),
        "conn client=192.0.2.7:40000 listener=web pool=app backend=[2001:db8::1]:80 \
         bytes_in=120 bytes_out=4567 connect_ms=3 duration_ms=1250 attempts=2 \
         end=client-reset term=CD"
    );
}

#[test]
fn a_routed_session_on_a_backup_says_so() {
    let r = Record {
        route: Some(RouteTaken {
            name: Some("alpha"),
            sni: Some("x.alpha.example"),
        }),
        backup: true,
        ..record(Instant::now())
    };
    let l = line(&r);
    assert!(
        l.contains(
            " pool=app route=alpha sni=x.alpha.example backend=[2001:db8::1]:80 backup=1 bytes_in="
        ),
        "{l}"
    );
    let default = Record {
        route: Some(RouteTaken {
            name: None,
            sni: None,
        }),
        ..record(Instant::now())
    };
    assert!(
        line(&default).contains(" route=- sni=- backend="),
        "{}",
        line(&default)
    );
}

#[test]
fn never_connected_session_has_dashes_for_backend_and_connect_time() {
    let r = Record {
        backend: None,
        connected: None,
        end: End::NoBackend,
        stage: Stage::Connect,
        connect_failure: Some(ConnectFailure::TimedOut),
        route: None,
        backup: false,
        ..record(Instant::now())
    };
    let l = line(&r);
    assert!(l.contains(" backend=- "), "{l}");
    assert!(l.contains(" connect_ms=- "), "{l}");
    assert!(l.ends_with(" end=no-backend term=sC"), "{l}");
}

#[test]
fn json_line_has_typed_fields_and_escaped_names() {
    let r = Record {
        listener: "front \"door\"\n",
        route: Some(RouteTaken {
            name: Some("alpha"),
            sni: None,
        }),
        ..record(Instant::now())
    };
    let mut out = Vec::new();
    r.write_json(
        &mut out,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_769_305),
    );
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["time"], "2026-11-27T08:48:25Z");
    assert_eq!(v["client"], "192.0.2.7");
    assert_eq!(v["client_port"], 40000);
    assert_eq!(v["listener"], "front \"door\"\n");
    assert_eq!(
        (v["route"].as_str(), v["sni"].is_null()),
        (Some("alpha"), true)
    );
    assert_eq!(v["backend"], "2001:db8::1");
    assert_eq!(v["backend_port"], 80);
    assert_eq!(v["bytes_in"], r.bytes_in);
    assert_eq!(v["bytes_out"], r.bytes_out);
    assert!(v["connect_ms"].is_u64() && v["duration_ms"].is_u64(), "{v}");
    assert_eq!(
        (v["end"].as_str(), v["term"].as_str()),
        (Some(r.end.as_str()), Some(r.term().as_str()))
    );
    let none = Record {
        backend: None,
        connected: None,
        route: None,
        ..record(Instant::now())
    };
    let mut out = Vec::new();
    none.write_json(
        &mut out,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_769_305),
    );
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert!(v["backend"].is_null() && v["backend_port"].is_null() && v["connect_ms"].is_null());
    assert!(v.get("route").is_none(), "{v}");
}

#[test]
fn names_with_spaces_stay_one_token() {
    let r = Record {
        listener: "front door",
        pool: "a\\b\tc",
        ..record(Instant::now())
    };
    let l = line(&r);
    assert!(
        l.contains(" listener=front\\x20door pool=a\\x5cb\\x09c "),
        "{l}"
    );
    let mut plain = Vec::new();
    push_name(&mut plain, "päärakennus:8080");
    assert_eq!(plain, "päärakennus:8080".as_bytes());
}
