//! Hashes whose output is part of the product's contract.
//!
//! Sticky routing only works if every balancer in a fleet, on any machine,
//! after any upgrade, sends the same client to the same backend. std's
//! `DefaultHasher` and `RandomState` promise none of that (random keys per
//! process, algorithm free to change between releases), so anything that
//! must agree across processes hashes with the functions here instead. Their
//! output is specified bit for bit below and pinned by test vectors: a change
//! that moves a vector moves every sticky client in the fleet, and must be
//! treated as a breaking change, not a refactor.

use std::net::IpAddr;

/// FNV-1a 64-bit offset basis (the published constant).
pub const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV 64-bit prime, 2^40 + 2^8 + 0xb3 (the published constant).
pub const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Seed of [`client_key`]: the ASCII bytes `clientip` read big-endian.
pub const CLIENT_KEY_SEED: u64 = u64::from_be_bytes(*b"clientip");

/// The MurmurHash3 64-bit finalizer (`fmix64`, Appleby):
///
/// ```text
/// x ^= x >> 33;  x *= 0xff51afd7ed558ccd;
/// x ^= x >> 33;  x *= 0xc4ceb9fe1a85ec53;
/// x ^= x >> 33;
/// ```
///
/// with wrapping multiplication. A bijection on `u64` (so it never adds
/// collisions) in which every input bit affects every output bit with
/// probability close to one half. `fmix64(0) == 0`.
pub const fn fmix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// A fully specified 64-bit hash of `bytes` under `seed`:
///
/// ```text
/// h = FNV_OFFSET_BASIS ^ fmix64(seed)
/// for each byte b:  h = (h ^ b) * FNV_PRIME      (FNV-1a, wrapping)
/// return fmix64(h)
/// ```
///
/// So with seed 0 it is `fmix64(FNV-1a-64(bytes))`, checkable against the
/// published FNV-1a vectors. FNV-1a alone mixes poorly (low output bits
/// depend only on low input bits, and similar inputs give similar hashes);
/// the final `fmix64` gives it full avalanche. Different seeds give
/// unrelated hashes of the same bytes, so one identity can yield several
/// independent numbers. Not cryptographic: it must not be used where an
/// adversary choosing inputs to collide would matter.
pub fn hash64(bytes: &[u8], seed: u64) -> u64 {
    let mut h = FNV_OFFSET_BASIS ^ fmix64(seed);
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    fmix64(h)
}

/// The routing key of a client address: [`hash64`] under [`CLIENT_KEY_SEED`]
/// of the address's canonical bytes, the 4 octets of an IPv4 address or the
/// 16 of an IPv6 one, in network order. An IPv4-mapped IPv6 address
/// (`::ffff:a.b.c.d`, what a dual-stack socket reports for an IPv4 client)
/// is the IPv4 client `a.b.c.d` and gets its key, so the same client sticks
/// to the same backend whichever kind of listener it arrived on.
pub fn client_key(ip: IpAddr) -> u64 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => hash64(&v4.octets(), CLIENT_KEY_SEED),
        IpAddr::V6(v6) => hash64(&v6.octets(), CLIENT_KEY_SEED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::quickcheck;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// FNV-1a 64 without any finalizer, the reference the vectors of its
    /// authors are given for.
    fn plain_fnv1a(bytes: &[u8]) -> u64 {
        bytes.iter().fold(FNV_OFFSET_BASIS, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
        })
    }

    #[test]
    fn fnv_core_matches_the_published_fnv1a_64_vectors() {
        // From the FNV reference test suite (Fowler, Noll, Vo).
        let published: &[(&[u8], u64)] = &[
            (b"", 0xcbf2_9ce4_8422_2325),
            (b"a", 0xaf63_dc4c_8601_ec8c),
            (b"foobar", 0x8594_4171_f739_67e8),
        ];
        for &(input, expected) in published {
            assert_eq!(plain_fnv1a(input), expected, "FNV-1a of {input:?}");
            assert_eq!(hash64(input, 0), fmix64(expected), "hash64 of {input:?}");
        }
    }

    #[test]
    fn fmix64_output_is_pinned() {
        assert_eq!(fmix64(0), 0);
        assert_eq!(fmix64(1), 0xb456_bcfc_34c2_cb2c);
        assert_eq!(fmix64(u64::MAX), 0x64b5_720b_4b82_5f21);
        assert_eq!(fmix64(0x0123_4567_89ab_cdef), 0x87cb_fbfe_8902_2cea);
    }

    #[test]
    fn hash64_output_is_pinned() {
        let vectors: &[(&[u8], u64, u64)] = &[
            (b"", 0, 0xefd0_1f60_ba99_2926),
            (b"a", 0, 0x82a2_a958_a9be_ce5b),
            (b"foobar", 0, 0x2c22_1949_22d1_672b),
            (b"10.0.0.1:80", 0, 0x5ed8_f827_5e47_a14a),
            (b"10.0.0.1:80", 1, 0xe0e3_6dde_0a8b_7493),
            (b"10.0.0.1:80", CLIENT_KEY_SEED, 0xee5b_39bc_52ac_d1a9),
            (&[1, 2, 3, 4], CLIENT_KEY_SEED, 0x0b75_7007_6c0b_6300),
        ];
        for &(input, seed, expected) in vectors {
            assert_eq!(
                hash64(input, seed),
                expected,
                "hash64({input:?}, {seed:#x}) changed: every sticky client would move"
            );
        }
    }

    #[test]
    fn client_key_output_is_pinned() {
        let v4: IpAddr = Ipv4Addr::new(1, 2, 3, 4).into();
        assert_eq!(client_key(v4), 0x0b75_7007_6c0b_6300);
        let v6: IpAddr = "2001:db8::1".parse().expect("literal address");
        assert_eq!(client_key(v6), 0x92b5_68cc_5141_e72b);
    }

    #[test]
    fn ipv4_mapped_ipv6_client_gets_the_ipv4_key() {
        let v4: IpAddr = "1.2.3.4".parse().expect("literal address");
        let mapped: IpAddr = "::ffff:1.2.3.4".parse().expect("literal address");
        assert_eq!(client_key(v4), client_key(mapped));
    }

    #[test]
    fn ipv4_compatible_and_plain_ipv6_clients_are_not_taken_for_ipv4() {
        let v4: IpAddr = "1.2.3.4".parse().expect("literal address");
        // The deprecated IPv4-compatible form is a distinct IPv6 client.
        let compatible: IpAddr = "::1.2.3.4".parse().expect("literal address");
        assert_ne!(client_key(v4), client_key(compatible));
    }

    #[test]
    fn different_seeds_give_unrelated_hashes() {
        let a = hash64(b"10.0.0.1:80", 1);
        let b = hash64(b"10.0.0.1:80", 2);
        let differing = (a ^ b).count_ones();
        assert!((16..=48).contains(&differing), "{differing} bits differ");
    }

    #[test]
    fn flipping_any_input_bit_flips_about_half_the_output_bits() {
        // Inputs shaped like real keys: IPv4 octets and backend names.
        let mut rng = fastrand::Rng::with_seed(7);
        let mut flips = 0u64;
        let mut trials = 0u64;
        for _ in 0..2_000 {
            let len = if rng.bool() { 4 } else { 16 };
            let mut input: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            let seed = rng.u64(..);
            let before = hash64(&input, seed);
            let bit = rng.usize(..len * 8);
            input[bit / 8] ^= 1 << (bit % 8);
            flips += u64::from((before ^ hash64(&input, seed)).count_ones());
            trials += 1;
        }
        let mean = flips as f64 / trials as f64;
        assert!((31.0..=33.0).contains(&mean), "mean bits flipped {mean}");
    }

    quickcheck! {
        fn every_ipv4_client_has_the_key_of_its_mapped_form(bits: u32) -> bool {
            let v4 = Ipv4Addr::from(bits);
            client_key(v4.into()) == client_key(IpAddr::V6(v4.to_ipv6_mapped()))
        }

        fn client_key_is_hash64_of_the_canonical_octets(bits: u128) -> bool {
            let v6 = Ipv6Addr::from(bits);
            let expected = match v6.to_ipv4_mapped() {
                Some(v4) => hash64(&v4.octets(), CLIENT_KEY_SEED),
                None => hash64(&v6.octets(), CLIENT_KEY_SEED),
            };
            client_key(v6.into()) == expected
        }
    }
}
