//! Properties of the byte pump over random schedules of a simulated socket
//! pair: how the source's peer sends (chunk sizes, FIN, reset), how the
//! destination's peer drains (short writes, `WouldBlock`, a closed pipe),
//! interrupted calls, spurious wake-ups and splice through a real kernel
//! pipe (or a kernel that refuses it).
//!
//! The driver calls the pump only as a reactor would: on a source edge when
//! the direction is not blocked, on a destination edge when it is, and on
//! the turn after it yielded. So a pump that stops with work left and no
//! edge to come stalls here, and the run says so.
//!
//! Checked after every call: the destination received a prefix of what
//! the source sent, in order and once; a FIN is passed on at most once and
//! only after the last byte; no call makes more socket calls than its
//! budget allows; a yield means the budget was spent; a direction that
//! holds no bytes holds no buffer or pipe; a failure names the side that
//! failed. At the end, with faults off, the direction finishes, and every
//! buffer and pipe is back in its pool.

use std::collections::VecDeque;
use std::io;

use quickcheck::{Arbitrary, Gen, QuickCheck};

use super::pump::{Carriers, Direction, DirectionState, Pumped, Stream, READ_BUDGET};
use crate::buffer::BufferPool;
use crate::config::ZeroCopy;
use crate::splice::{Pipe, PipePool};

/// Small buffers, so that a few hundred bytes take many reads.
const BUFFER: usize = 16;
/// Turns after the schedule, with faults off, for the direction to finish.
const SETTLE_TURNS: usize = 10_000;

/// One end of a simulated TCP connection, as the pump sees it.
#[derive(Debug, Default)]
struct SimSocket {
    /// Sent by the peer, not read yet.
    inbound: VecDeque<u8>,
    /// The peer's FIN is in, after `inbound`.
    fin: bool,
    /// The peer reset: every call fails.
    reset: bool,
    /// The peer closed its end: writes fail with EPIPE.
    broken: bool,
    /// The next call fails with EINTR.
    interrupt: bool,
    /// splice(2) fails with EINVAL, as on a kernel that cannot splice.
    no_splice: bool,
    /// Bytes the send queue can take now.
    room: usize,
    /// What the pump wrote, in order.
    written: Vec<u8>,
    /// `shutdown_write` calls, and how many bytes were written before the
    /// first.
    fins_sent: u32,
    written_at_fin: usize,
    /// Socket calls made (for the budget check).
    calls: usize,
}

impl SimSocket {
    fn fail(&mut self) -> Option<io::Error> {
        self.calls += 1;
        if std::mem::take(&mut self.interrupt) {
            return Some(io::ErrorKind::Interrupted.into());
        }
        self.reset.then(|| io::ErrorKind::ConnectionReset.into())
    }

    fn readable(&mut self) -> io::Result<usize> {
        if let Some(e) = self.fail() {
            return Err(e);
        }
        match (self.inbound.len(), self.fin) {
            (0, true) => Ok(0),
            (0, false) => Err(io::ErrorKind::WouldBlock.into()),
            (n, _) => Ok(n),
        }
    }

    fn writable(&mut self) -> io::Result<usize> {
        if let Some(e) = self.fail() {
            return Err(e);
        }
        match (self.broken, self.room) {
            (true, _) => Err(io::ErrorKind::BrokenPipe.into()),
            (false, 0) => Err(io::ErrorKind::WouldBlock.into()),
            (false, room) => Ok(room),
        }
    }

    fn unsupported(&self) -> Option<io::Error> {
        self.no_splice
            .then(|| io::Error::from_raw_os_error(libc::EINVAL))
    }
}

impl Stream for SimSocket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.readable()?.min(buf.len());
        for (slot, byte) in buf.iter_mut().zip(self.inbound.drain(..n)) {
            *slot = byte;
        }
        Ok(n)
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.writable()?.min(buf.len());
        self.written.extend_from_slice(&buf[..n]);
        self.room -= n;
        Ok(n)
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        if self.fins_sent == 0 {
            self.written_at_fin = self.written.len();
        }
        self.fins_sent += 1;
        Ok(())
    }

    fn splice_into(&mut self, pipe: &mut Pipe) -> io::Result<usize> {
        if let Some(e) = self.unsupported() {
            return Err(e);
        }
        let n = self.readable()?.min(pipe.room());
        let bytes: Vec<u8> = self.inbound.drain(..n).collect();
        let pushed = pipe.push(&bytes)?;
        assert_eq!(pushed, n, "a pipe with room took less than asked");
        Ok(n)
    }

    fn splice_from(&mut self, pipe: &mut Pipe) -> io::Result<usize> {
        if let Some(e) = self.unsupported() {
            return Err(e);
        }
        let n = self.writable()?.min(pipe.pending());
        let mut bytes = vec![0; n];
        let pulled = pipe.pull(&mut bytes)?;
        self.written.extend_from_slice(&bytes[..pulled]);
        self.room -= pulled;
        Ok(pulled)
    }
}

/// A schedule: the payload's size, how the direction is set up, and one
/// byte per step saying what happens (see `Run::step`).
#[derive(Debug, Clone)]
struct Schedule {
    payload: u16,
    zero_copy: u8,
    /// The other direction has ended: the session's close sends the FIN.
    last: bool,
    no_splice: bool,
    steps: Vec<u8>,
}

impl Arbitrary for Schedule {
    fn arbitrary(g: &mut Gen) -> Schedule {
        Schedule {
            payload: u16::arbitrary(g) % 2048,
            zero_copy: u8::arbitrary(g) % 3,
            last: bool::arbitrary(g),
            no_splice: u8::arbitrary(g) % 4 == 0,
            steps: Vec::arbitrary(g),
        }
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Schedule>> {
        let base = self.clone();
        let steps = self.steps.shrink().map({
            let base = base.clone();
            move |steps| Schedule {
                steps,
                ..base.clone()
            }
        });
        let payload = self.payload.shrink().map(move |payload| Schedule {
            payload,
            ..base.clone()
        });
        Box::new(steps.chain(payload))
    }
}

/// What one turn of the simulated reactor has pending.
#[derive(Debug, Default)]
struct Edges {
    source: bool,
    destination: bool,
    yielded: bool,
    spurious: bool,
}

struct Run {
    payload: Vec<u8>,
    /// Bytes of `payload` the source's peer has sent.
    sent: usize,
    src: SimSocket,
    dst: SimSocket,
    direction: Direction,
    buffers: BufferPool,
    pipes: PipePool,
    zero_copy: ZeroCopy,
    last: bool,
    edges: Edges,
    /// How the direction ended, once it has.
    outcome: Option<Pumped>,
}

fn pattern(i: usize) -> u8 {
    (i.wrapping_mul(31) % 251) as u8
}

impl Run {
    fn new(schedule: &Schedule) -> Run {
        let payload = (0..usize::from(schedule.payload)).map(pattern).collect();
        Run {
            payload,
            sent: 0,
            src: SimSocket {
                no_splice: schedule.no_splice,
                ..SimSocket::default()
            },
            dst: SimSocket {
                no_splice: schedule.no_splice,
                room: 64,
                ..SimSocket::default()
            },
            direction: Direction::default(),
            buffers: BufferPool::new(BUFFER, 2),
            pipes: PipePool::new(1),
            zero_copy: [ZeroCopy::Off, ZeroCopy::Auto, ZeroCopy::On]
                [usize::from(schedule.zero_copy)],
            last: schedule.last,
            edges: Edges::default(),
            outcome: None,
        }
    }

    /// What the peers do in one step: the low three bits choose, the rest
    /// size it. Faults only when `faults` is on.
    fn step(&mut self, op: u8, faults: bool) {
        let size = usize::from(op >> 3) * 7 + 1;
        match op & 7 {
            0 | 1 => self.send(size),
            2 => self.send_fin(),
            3 | 4 => self.drain(size),
            5 if op & 8 != 0 => self.src.interrupt = true,
            5 => self.dst.interrupt = true,
            6 if faults && op >= 0xF0 => {
                self.src.reset = true;
                self.edges.source = true;
            }
            6 if faults && op >= 0xE0 => {
                self.dst.broken = true;
                self.edges.destination = true;
            }
            _ => self.edges.spurious = true,
        }
    }

    fn send(&mut self, size: usize) {
        let n = size.min(self.payload.len() - self.sent);
        if n > 0 {
            let chunk = &self.payload[self.sent..self.sent + n];
            self.src.inbound.extend(chunk);
            self.sent += n;
            self.edges.source = true;
        }
    }

    /// The source's peer ends its stream, once everything is sent. Its
    /// edge is flagged (`EPOLLRDHUP`) and the session notes the flag even
    /// when the direction is blocked and the edge is not acted on: the
    /// next short read is then the end.
    fn send_fin(&mut self) {
        if self.sent == self.payload.len() && !self.src.fin {
            self.src.fin = true;
            self.edges.source = true;
            self.direction.src_closing = true;
        }
    }

    fn drain(&mut self, size: usize) {
        self.dst.room += size;
        self.edges.destination = true;
    }

    /// One reactor turn: calls the pump if an edge it waits for came.
    fn turn(&mut self) -> Result<(), String> {
        if self.outcome.is_some() {
            return Ok(());
        }
        let edges = std::mem::take(&mut self.edges);
        let blocked = self.direction.is_blocked();
        let call = (edges.source && !blocked)
            || (edges.destination && blocked)
            || edges.yielded
            || edges.spurious;
        if !call {
            return Ok(());
        }
        let calls_before = self.src.calls + self.dst.calls;
        let reads_before = self.src.calls;
        let mut carriers = Carriers {
            buffers: &mut self.buffers,
            pipes: &mut self.pipes,
            zero_copy: self.zero_copy,
        };
        let pumped = self
            .direction
            .pump(&mut self.src, &mut self.dst, &mut carriers, self.last);
        let calls = self.src.calls + self.dst.calls - calls_before;
        let reads = self.src.calls - reads_before;
        self.check(pumped, calls, reads)?;
        match pumped {
            Pumped::Yield => self.edges.yielded = true,
            Pumped::Moved => {}
            Pumped::Finished | Pumped::ReadFailed | Pumped::WriteFailed => {
                self.outcome = Some(pumped);
                let mut carriers = Carriers {
                    buffers: &mut self.buffers,
                    pipes: &mut self.pipes,
                    zero_copy: self.zero_copy,
                };
                self.direction.discard(&mut carriers);
                self.check_returned("after the direction ended")?;
            }
        }
        Ok(())
    }

    fn check(&self, pumped: Pumped, calls: usize, reads: usize) -> Result<(), String> {
        let written = &self.dst.written;
        if written[..] != self.payload[..written.len()] {
            return Err(format!(
                "destination got {written:?}, not a prefix of the payload"
            ));
        }
        if self.dst.fins_sent > 1 {
            return Err(format!("FIN passed on {} times", self.dst.fins_sent));
        }
        if self.dst.fins_sent == 1
            && (self.dst.written_at_fin != self.payload.len() || !self.src.fin)
        {
            return Err(format!(
                "FIN passed on after {} of {} bytes (source FIN in: {})",
                self.dst.written_at_fin,
                self.payload.len(),
                self.src.fin
            ));
        }
        // Each read and each write either moves bytes or ends the call; a
        // splice the kernel refuses falls back to buffers once.
        let most = 4 * READ_BUDGET + 8;
        if calls > most {
            return Err(format!(
                "{calls} socket calls in one pump call (at most {most})"
            ));
        }
        if pumped == Pumped::Yield && reads < READ_BUDGET {
            return Err(format!("yielded after {reads} reads, budget {READ_BUDGET}"));
        }
        match pumped {
            Pumped::ReadFailed if !self.src.reset => Err("read failed on a healthy source".into()),
            Pumped::WriteFailed if !(self.dst.broken || self.dst.reset) => {
                Err("write failed on a healthy destination".into())
            }
            Pumped::Finished => {
                let fins = u32::from(!self.last);
                if written.len() != self.payload.len() || self.dst.fins_sent != fins {
                    return Err(format!(
                        "finished with {} of {} bytes and {} FINs (want {fins})",
                        written.len(),
                        self.payload.len(),
                        self.dst.fins_sent
                    ));
                }
                Ok(())
            }
            Pumped::Moved | Pumped::Yield if !self.direction.is_blocked() => {
                self.check_returned("while holding no bytes")
            }
            _ => Ok(()),
        }
    }

    fn check_returned(&self, when: &str) -> Result<(), String> {
        match (self.buffers.in_use(), self.pipes.in_use()) {
            (0, 0) => Ok(()),
            (b, p) => Err(format!("{b} buffers and {p} pipes out {when}")),
        }
    }

    /// With faults off, the peers finish their part; the direction must
    /// finish within a bounded number of turns, and nothing stays lent.
    fn settle(&mut self) -> Result<(), String> {
        for turn in 0..SETTLE_TURNS {
            if self.outcome.is_some() {
                break;
            }
            match turn % 3 {
                0 => self.send(usize::MAX),
                1 => self.send_fin(),
                _ => self.drain(4096),
            }
            self.turn()?;
        }
        let faulted = self.src.reset || self.dst.broken;
        match self.outcome {
            Some(Pumped::Finished) => Ok(()),
            Some(_) if faulted => Ok(()),
            other => Err(format!(
                "stalled: outcome {other:?}, state {:?}, {} of {} bytes out, blocked {}",
                self.direction.state(),
                self.dst.written.len(),
                self.payload.len(),
                self.direction.is_blocked()
            )),
        }
    }
}

fn run(schedule: &Schedule) -> Result<(), String> {
    let mut run = Run::new(schedule);
    for &op in &schedule.steps {
        run.step(op, true);
        run.turn()?;
    }
    run.settle()?;
    if run.outcome == Some(Pumped::Finished) && run.direction.state() != DirectionState::Closed {
        return Err("finished but not closed".into());
    }
    run.check_returned("at the end")
}

fn pump_property(schedule: Schedule) -> quickcheck::TestResult {
    match run(&schedule) {
        Ok(()) => quickcheck::TestResult::passed(),
        Err(why) => quickcheck::TestResult::error(why),
    }
}

#[test]
fn every_byte_arrives_once_in_order_and_the_fin_follows_the_last() {
    QuickCheck::new()
        .tests(3000)
        .quickcheck(pump_property as fn(Schedule) -> quickcheck::TestResult);
}

#[test]
fn a_reset_source_fails_the_read_and_returns_every_carrier() {
    let schedule = Schedule {
        payload: 600,
        zero_copy: 2,
        last: false,
        no_splice: false,
        // send, reset, then spurious wake-ups
        steps: vec![0x80, 0xF6, 7, 7],
    };
    let mut run = Run::new(&schedule);
    run.dst.room = 10_000;
    for &op in &schedule.steps {
        run.step(op, true);
        run.turn().expect("checks hold");
    }
    assert_eq!(run.outcome, Some(Pumped::ReadFailed));
    assert_eq!((run.buffers.in_use(), run.pipes.in_use()), (0, 0));
}

#[test]
fn a_closed_destination_fails_the_write_without_passing_a_fin() {
    let schedule = Schedule {
        payload: 100,
        zero_copy: 0,
        last: false,
        no_splice: false,
        // send, destination closes, send more
        steps: vec![0x80, 0xE6, 0x80],
    };
    let mut run = Run::new(&schedule);
    run.dst.room = 0;
    for &op in &schedule.steps {
        run.step(op, true);
        run.turn().expect("checks hold");
    }
    assert_eq!(run.outcome, Some(Pumped::WriteFailed));
    assert_eq!(run.dst.fins_sent, 0);
}

#[test]
fn a_kernel_without_splice_falls_back_to_buffers_losing_nothing() {
    let schedule = Schedule {
        payload: 1500,
        zero_copy: 2,
        last: false,
        no_splice: true,
        steps: vec![0xF8, 0xF8, 0xF8, 0xFB, 0xFB, 0xFB, 0xFB],
    };
    run(&schedule).expect("relayed on buffers");
}
