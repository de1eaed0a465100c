//! Obfuscated row ids like the real portal's `row-yfqn_bkdi~7x27`.
//!
//! The server's `:id` order is the order of an internal sequence number; the visible id is a reversible
//! scramble of it, so alphabetical order of ids differs from the server's order (as on the real portal) and
//! a client that compares ids locally gets wrong answers here too.

const ALPHABET: &[u8; 32] = b"23456789abcdefghijkmnpqrstuvwxyz";
const MASK: u64 = (1 << 60) - 1;
const MULT: u64 = 0x0bad_5eed_c0ff_ee1d | 1;
const XOR: u64 = 0x0123_4567_89ab_cdef & MASK;

fn inverse(m: u64) -> u64 {
    // Newton's iteration for the inverse of an odd number modulo 2^64.
    let mut inv = m;
    for _ in 0..6 {
        inv = inv.wrapping_mul(2u64.wrapping_sub(m.wrapping_mul(inv)));
    }
    inv
}

pub fn encode(seq: u64) -> String {
    let x = (seq.wrapping_mul(MULT) & MASK) ^ XOR;
    let mut s = String::with_capacity(18);
    s.push_str("row-");
    for i in 0..12 {
        if i == 4 {
            s.push('_');
        }
        if i == 8 {
            s.push('~');
        }
        let shift = 55 - 5 * i;
        s.push(ALPHABET[((x >> shift) & 31) as usize] as char);
    }
    s
}

pub fn decode(id: &str) -> Option<u64> {
    let body = id.strip_prefix("row-")?;
    let b = body.as_bytes();
    if b.len() != 14 || b[4] != b'_' || b[9] != b'~' {
        return None;
    }
    let mut x = 0u64;
    for (i, &c) in b.iter().enumerate() {
        if i == 4 || i == 9 {
            continue;
        }
        let v = ALPHABET.iter().position(|&a| a == c)? as u64;
        x = (x << 5) | v;
    }
    Some(((x ^ XOR).wrapping_mul(inverse(MULT))) & MASK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_alphabetical_order_differs_from_server_order() {
        let ids: Vec<String> = (1..200).map(encode).collect();
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(decode(id), Some(i as u64 + 1), "{id}");
        }
        let mut sorted = ids.clone();
        sorted.sort();
        assert_ne!(sorted, ids);
        assert_eq!(decode("row-nope"), None);
        assert_eq!(decode("row-0000_0000~0000"), None);
    }
}
