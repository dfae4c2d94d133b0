//! The rise/fall state machine of one backend, without any I/O.
//!
//! Consecutive counters in the manner of pingora's `observe_health`: a down
//! backend comes up after `rise` passes in a row, an up one goes down after
//! `fall` failures in a row; any result of the other kind resets the run.
//! A backend of unknown health (initial state `unknown`) is up after its
//! first pass and confirmed down after `fall` failures.

use crate::config::InitialState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Health {
    Up,
    Down,
    /// Not yet checked (initial state `unknown`); not up for traffic.
    Unknown,
}

/// A state change: the new state, and the run of results that caused it
/// out of the run needed (`3/3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Transition {
    pub up: bool,
    pub count: u32,
    pub needed: u32,
}

#[derive(Debug, Clone)]
pub(super) struct Machine {
    health: Health,
    rise: u32,
    fall: u32,
    /// Consecutive passes while not up.
    passes: u32,
    /// Consecutive failures while not down.
    failures: u32,
}

impl Machine {
    /// `rise` and `fall` below 1 are taken as 1.
    pub(super) fn new(initial: InitialState, rise: u32, fall: u32) -> Machine {
        Machine {
            health: match initial {
                InitialState::Up => Health::Up,
                InitialState::Unknown => Health::Unknown,
            },
            rise: rise.max(1),
            fall: fall.max(1),
            passes: 0,
            failures: 0,
        }
    }

    #[cfg(test)]
    pub(super) fn health(&self) -> Health {
        self.health
    }

    pub(super) fn is_up(&self) -> bool {
        self.health == Health::Up
    }

    /// Takes new thresholds (after a reload), keeping the runs so far.
    pub(super) fn set_thresholds(&mut self, rise: u32, fall: u32) {
        self.rise = rise.max(1);
        self.fall = fall.max(1);
    }

    /// Records one check result; `Some` when it changes the state.
    pub(super) fn observe(&mut self, pass: bool) -> Option<Transition> {
        match (self.health, pass) {
            (Health::Up, true) | (Health::Down, false) => {
                self.passes = 0;
                self.failures = 0;
                None
            }
            (Health::Down | Health::Unknown, true) => {
                self.failures = 0;
                self.passes += 1;
                let needed = if self.health == Health::Unknown {
                    1
                } else {
                    self.rise
                };
                (self.passes >= needed).then(|| self.enter(Health::Up, needed))
            }
            (Health::Up | Health::Unknown, false) => {
                self.passes = 0;
                self.failures += 1;
                (self.failures >= self.fall).then(|| self.enter(Health::Down, self.fall))
            }
        }
    }

    /// Someone else (passive detection) marked the backend down while this
    /// machine had it up: adopt down with an empty rise run, so it comes
    /// back only after `rise` passes. False if it was not up.
    pub(super) fn adopt_down(&mut self) -> bool {
        if self.health != Health::Up {
            return false;
        }
        self.health = Health::Down;
        self.passes = 0;
        self.failures = 0;
        true
    }

    fn enter(&mut self, health: Health, needed: u32) -> Transition {
        let count = if health == Health::Up {
            self.passes
        } else {
            self.failures
        };
        self.health = health;
        self.passes = 0;
        self.failures = 0;
        Transition {
            up: health == Health::Up,
            count,
            needed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::{quickcheck, TestResult};

    /// The reference: walk the results keeping only the current state and
    /// the length of the current run of results that contradict it.
    fn reference(initial: InitialState, rise: u32, fall: u32, events: &[Event]) -> Vec<Health> {
        let mut health = match initial {
            InitialState::Up => Health::Up,
            InitialState::Unknown => Health::Unknown,
        };
        let mut run = 0;
        let mut out = Vec::new();
        for &event in events {
            match event {
                Event::External if health == Health::Up => {
                    health = Health::Down;
                    run = 0;
                }
                Event::External => {}
                Event::Result(pass) => {
                    let contradicts = match health {
                        Health::Up => !pass,
                        Health::Down => pass,
                        Health::Unknown => true,
                    };
                    if !contradicts {
                        run = 0;
                    } else if health == Health::Unknown && pass {
                        health = Health::Up;
                        run = 0;
                    } else {
                        // In Unknown, the run is of failures (a pass ends it).
                        run += 1;
                        let needed = if health == Health::Down { rise } else { fall };
                        if run == needed {
                            health = if pass { Health::Up } else { Health::Down };
                            run = 0;
                        }
                    }
                }
            }
            out.push(health);
        }
        out
    }

    #[derive(Debug, Clone, Copy)]
    enum Event {
        Result(bool),
        External,
    }

    fn run(m: &mut Machine, events: &[Event]) -> (Vec<Health>, Vec<(usize, Transition)>) {
        let mut states = Vec::new();
        let mut transitions = Vec::new();
        for (i, &event) in events.iter().enumerate() {
            match event {
                Event::Result(pass) => {
                    if let Some(t) = m.observe(pass) {
                        transitions.push((i, t));
                    }
                }
                Event::External => {
                    m.adopt_down();
                }
            }
            states.push(m.health());
        }
        (states, transitions)
    }

    #[test]
    fn every_sequence_up_to_ten_results_matches_the_reference() {
        for initial in [InitialState::Up, InitialState::Unknown] {
            for rise in 1..=3 {
                for fall in 1..=3 {
                    for len in 0..=10 {
                        for bits in 0u32..(1 << len) {
                            let events: Vec<Event> = (0..len)
                                .map(|i| Event::Result(bits >> i & 1 == 1))
                                .collect();
                            let mut m = Machine::new(initial, rise, fall);
                            let (states, _) = run(&mut m, &events);
                            assert_eq!(
                                states,
                                reference(initial, rise, fall, &events),
                                "{initial:?} rise {rise} fall {fall} {events:?}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn up_backend_goes_down_only_on_the_fall_th_consecutive_failure() {
        let mut m = Machine::new(InitialState::Up, 2, 3);
        assert_eq!(m.observe(false), None);
        assert_eq!(m.observe(false), None);
        assert_eq!(m.observe(true), None, "a pass resets the failure run");
        assert_eq!(m.observe(false), None);
        assert_eq!(m.observe(false), None);
        let t = m.observe(false);
        assert_eq!(
            t,
            Some(Transition {
                up: false,
                count: 3,
                needed: 3
            })
        );
        assert_eq!(m.observe(true), None);
        assert_eq!(m.observe(false), None, "a failure resets the pass run");
        assert_eq!(m.observe(true), None);
        assert_eq!(
            m.observe(true),
            Some(Transition {
                up: true,
                count: 2,
                needed: 2
            })
        );
    }

    #[test]
    fn unknown_backend_is_up_after_its_first_pass() {
        let mut m = Machine::new(InitialState::Unknown, 5, 3);
        assert!(!m.is_up());
        assert_eq!(
            m.observe(true),
            Some(Transition {
                up: true,
                count: 1,
                needed: 1
            })
        );
    }

    #[test]
    fn unknown_backend_is_confirmed_down_after_fall_failures_then_needs_rise() {
        let mut m = Machine::new(InitialState::Unknown, 2, 2);
        assert_eq!(m.observe(false), None);
        assert_eq!(m.health(), Health::Unknown);
        assert!(m.observe(false).is_some_and(|t| !t.up));
        assert_eq!(m.health(), Health::Down);
        assert_eq!(m.observe(true), None, "down now needs rise passes");
        assert!(m.observe(true).is_some_and(|t| t.up));
    }

    #[test]
    fn externally_marked_down_backend_returns_only_after_rise_passes() {
        let mut m = Machine::new(InitialState::Up, 3, 2);
        assert!(m.adopt_down());
        assert!(!m.adopt_down(), "already down");
        assert_eq!(m.observe(true), None);
        assert_eq!(m.observe(true), None);
        assert!(m.observe(true).is_some_and(|t| t.up && t.count == 3));
    }

    quickcheck! {
        fn transitions_come_exactly_after_rise_or_fall_consecutive_results(
            rise: u8, fall: u8, unknown: bool, raw: Vec<u8>
        ) -> TestResult {
            let (rise, fall) = (u32::from(rise % 5) + 1, u32::from(fall % 5) + 1);
            let initial = if unknown { InitialState::Unknown } else { InitialState::Up };
            // One event in eight is an external mark-down.
            let events: Vec<Event> = raw
                .iter()
                .map(|b| if b % 8 == 0 { Event::External } else { Event::Result(b % 2 == 1) })
                .collect();
            let mut m = Machine::new(initial, rise, fall);
            let (states, transitions) = run(&mut m, &events);
            if states != reference(initial, rise, fall, &events) {
                return TestResult::failed();
            }
            // Each reported transition ends a run of exactly `needed` equal
            // results, all of the new state's kind (an external mark while
            // already down changes nothing, so it may sit inside the run).
            for (i, t) in transitions {
                let needed = t.needed as usize;
                let results: Vec<bool> = events[..=i]
                    .iter()
                    .filter_map(|e| match e {
                        Event::Result(p) => Some(*p),
                        Event::External => None,
                    })
                    .collect();
                if t.count != t.needed || results.len() < needed {
                    return TestResult::failed();
                }
                if !results[results.len() - needed..].iter().all(|p| *p == t.up) {
                    return TestResult::failed();
                }
            }
            TestResult::passed()
        }
    }
}
