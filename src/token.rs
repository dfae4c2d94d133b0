//! Poll tokens: which socket an event is for.
//!
//! The low range is reserved for the reactor's waker and its listening
//! sockets (TCP and UDP alike). Above it, a token encodes a slab key and a
//! kind: the client or backend side of a TCP session (one slab entry serves
//! both of its sockets), or a UDP flow's socket toward its backend (a slab
//! of its own). Keys and kinds are interleaved (`key * 3 + kind`), so every
//! token above the reserved range names exactly one socket.

use mio::Token;

pub(crate) const WAKER: Token = Token(0);
const LISTENER_BASE: usize = 1;
/// At most this many listening sockets per reactor.
pub(crate) const MAX_LISTENERS: usize = 4095;
const SESSION_BASE: usize = LISTENER_BASE + MAX_LISTENERS;
/// Kinds of token above the reserved range.
const KINDS: usize = 3;
const CLIENT: usize = 0;
const BACKEND: usize = 1;
const FLOW: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Client,
    Backend,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Waker,
    Listener(usize),
    Session(usize, Side),
    /// A UDP flow's socket toward its backend, by flow slab key.
    Flow(usize),
}

pub(crate) fn listener(index: usize) -> Token {
    debug_assert!(index < MAX_LISTENERS);
    Token(LISTENER_BASE + index)
}

pub(crate) fn session(key: usize, side: Side) -> Token {
    let kind = match side {
        Side::Client => CLIENT,
        Side::Backend => BACKEND,
    };
    Token(SESSION_BASE + key * KINDS + kind)
}

pub(crate) fn flow(key: usize) -> Token {
    Token(SESSION_BASE + key * KINDS + FLOW)
}

pub(crate) fn decode(token: Token) -> Target {
    match token.0 {
        0 => Target::Waker,
        t if t < SESSION_BASE => Target::Listener(t - LISTENER_BASE),
        t => {
            let (key, kind) = ((t - SESSION_BASE) / KINDS, (t - SESSION_BASE) % KINDS);
            match kind {
                CLIENT => Target::Session(key, Side::Client),
                BACKEND => Target::Session(key, Side::Backend),
                _ => Target::Flow(key),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: [usize; 6] = [0, 1, 2, 1000, 1 << 20, 1 << 40];

    #[test]
    fn tokens_round_trip_to_what_they_name() {
        assert_eq!(decode(WAKER), Target::Waker);
        assert_eq!(decode(listener(0)), Target::Listener(0));
        assert_eq!(decode(listener(7)), Target::Listener(7));
        assert_eq!(
            decode(listener(MAX_LISTENERS - 1)),
            Target::Listener(MAX_LISTENERS - 1)
        );
        for key in KEYS {
            for side in [Side::Client, Side::Backend] {
                assert_eq!(decode(session(key, side)), Target::Session(key, side));
            }
            assert_eq!(decode(flow(key)), Target::Flow(key));
        }
    }

    #[test]
    fn sessions_and_flows_with_the_same_key_get_different_tokens() {
        for key in KEYS {
            let tokens = [
                session(key, Side::Client),
                session(key, Side::Backend),
                flow(key),
            ];
            assert_ne!(tokens[0], tokens[1]);
            assert_ne!(tokens[1], tokens[2]);
            assert_ne!(tokens[0], tokens[2]);
            assert!(tokens.iter().all(|t| t.0 > listener(MAX_LISTENERS - 1).0));
        }
    }

    #[test]
    fn every_token_above_the_listeners_decodes_to_one_that_encodes_back() {
        for t in SESSION_BASE..SESSION_BASE + 300 {
            let again = match decode(Token(t)) {
                Target::Session(key, side) => session(key, side),
                Target::Flow(key) => flow(key),
                other => panic!("token {t} decoded to {other:?}"),
            };
            assert_eq!(again, Token(t));
        }
    }
}
