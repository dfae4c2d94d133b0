//! Poll tokens: which socket an event is for.
//!
//! The low range is reserved for the reactor's waker and its listeners; above
//! it, a token encodes a session's slab key and the side of the session
//! (client or backend), so one slab entry serves both of its sockets.

use mio::Token;

pub const WAKER: Token = Token(0);
const LISTENER_BASE: usize = 1;
/// At most this many listening sockets per reactor.
pub const MAX_LISTENERS: usize = 4095;
const SESSION_BASE: usize = LISTENER_BASE + MAX_LISTENERS;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Backend,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Waker,
    Listener(usize),
    Session(usize, Side),
}

pub fn listener(index: usize) -> Token {
    debug_assert!(index < MAX_LISTENERS);
    Token(LISTENER_BASE + index)
}

pub fn session(key: usize, side: Side) -> Token {
    let bit = match side {
        Side::Client => 0,
        Side::Backend => 1,
    };
    Token(SESSION_BASE + (key << 1 | bit))
}

pub fn decode(token: Token) -> Target {
    match token.0 {
        0 => Target::Waker,
        t if t < SESSION_BASE => Target::Listener(t - LISTENER_BASE),
        t => {
            let s = t - SESSION_BASE;
            let side = if s & 1 == 0 {
                Side::Client
            } else {
                Side::Backend
            };
            Target::Session(s >> 1, side)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_to_what_they_name() {
        assert_eq!(decode(WAKER), Target::Waker);
        assert_eq!(decode(listener(0)), Target::Listener(0));
        assert_eq!(decode(listener(7)), Target::Listener(7));
        for key in [0, 1, 2, 1000, 1 << 20] {
            for side in [Side::Client, Side::Backend] {
                assert_eq!(decode(session(key, side)), Target::Session(key, side));
            }
        }
    }
}
