//! The Internet checksum (RFC 1071): one's-complement sums over 16-bit big-endian words.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Adds `data` to the running sum `acc` (an odd last byte is padded with zero). The sum is kept
/// unfolded in a u64 so that no carry is lost; [`fold`] reduces it.
#[inline]
pub fn sum(data: &[u8], mut acc: u64) -> u64 {
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    let rest = words.remainder();
    let mut i = 0;
    while i + 1 < rest.len() {
        acc += u64::from(u16::from_be_bytes([rest[i], rest[i + 1]]));
        i += 2;
    }
    if i < rest.len() {
        acc += u64::from(rest[i]) << 8;
    }
    acc
}

/// Folds a running sum to 16 bits (not complemented).
#[inline]
pub fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The checksum to write into a header whose checksum field is zero: `!fold(sum(data))`.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(data, 0))
}

/// Whether `data`, checksum field included, sums to 0xffff (a correct checksum).
///
/// The fast path's one checksum (the IPv4 header): summed in native byte order, which RFC 1071
/// §2(B) allows (the one's-complement sum commutes with a byte swap, and 0xffff is its own
/// swap), four bytes at a time, and tested without folding ([`folds_to_ffff`]).
#[inline]
pub fn verify(data: &[u8]) -> bool {
    let mut acc = 0u64;
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_ne_bytes([w[0], w[1], w[2], w[3]]));
    }
    let rest = words.remainder();
    let mut i = 0;
    while i + 1 < rest.len() {
        acc += u64::from(u16::from_ne_bytes([rest[i], rest[i + 1]]));
        i += 2;
    }
    if i < rest.len() {
        acc += u64::from(u16::from_ne_bytes([rest[i], 0]));
    }
    folds_to_ffff(acc)
}

/// [`verify`] of a 20-byte header (IPv4 without options, the common case): five loads, four
/// adds, a multiply and a compare.
#[inline]
pub fn verify20(h: &[u8; 20]) -> bool {
    let w = |i: usize| u64::from(u32::from_ne_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]));
    folds_to_ffff(w(0) + w(4) + w(8) + w(12) + w(16))
}

/// Whether the running sum `acc` folds to 0xffff ([`fold`] of it is 0xffff). Each folding step
/// keeps the value modulo 0xffff (2^16 is 1 modulo 0xffff) and a non-zero sum never folds to
/// 0, so this is "0xffff divides `acc`" for a non-zero `acc`. Divisibility by an odd constant
/// is one multiply and a compare (Granlund and Montgomery, 1994): multiplying by the inverse of
/// 0xffff modulo 2^64 maps the multiples `k * 0xffff` onto `k`, and every other number above
/// `u64::MAX / 0xffff`. Folding takes a dozen instructions.
#[inline]
fn folds_to_ffff(acc: u64) -> bool {
    acc != 0 && acc.wrapping_mul(INV_FFFF) <= u64::MAX / 0xffff
}

/// The inverse of 0xffff modulo 2^64 (Newton's iteration doubles the correct low bits; an odd
/// number is its own inverse modulo 8, so five steps give 96 > 64).
const INV_FFFF: u64 = {
    let d = 0xffffu64;
    let mut x = d;
    let mut i = 0;
    while i < 5 {
        x = x.wrapping_mul(2u64.wrapping_sub(d.wrapping_mul(x)));
        i += 1;
    }
    x
};
const _: () = assert!(INV_FFFF.wrapping_mul(0xffff) == 1);

/// The IPv4 pseudo-header's sum (RFC 768/793) for an L4 message of `len` bytes.
pub fn pseudo_v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> u64 {
    let acc = sum(&src.octets(), 0);
    let acc = sum(&dst.octets(), acc);
    acc + u64::from(proto) + len as u64
}

/// The IPv6 pseudo-header's sum (RFC 8200 §8.1) for an upper-layer message of `len` bytes.
pub fn pseudo_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, len: usize) -> u64 {
    let acc = sum(&src.octets(), 0);
    let acc = sum(&dst.octets(), acc);
    acc + u64::from(next_header) + len as u64
}

/// The L4 checksum of `msg` (its checksum field zero) over the pseudo-header sum `pseudo`.
/// UDP writes 0xffff instead of 0 (0 means "no checksum" there); TCP and ICMP take it as is.
pub fn l4(pseudo: u64, msg: &[u8]) -> u16 {
    !fold(sum(msg, pseudo))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example_and_odd_lengths() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (folded).
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data, 0)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
        // An odd trailing byte is the high half of a zero-padded word.
        assert_eq!(fold(sum(&[0x12], 0)), 0x1200);
        assert_eq!(fold(sum(&[0x00, 0x01, 0x12], 0)), 0x1201);
        assert_eq!(fold(sum(&[0, 1, 0, 2, 0, 3], 0)), 6);
        // The native-order verification agrees with the big-endian sum on every length.
        let bytes: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
        for n in 0..bytes.len() {
            let d = &bytes[..n];
            assert_eq!(verify(d), fold(sum(d, 0)) == 0xffff, "{n} bytes");
            let mut with = d.to_vec();
            with.extend_from_slice(&checksum(d).to_be_bytes());
            if n % 2 == 0 {
                assert!(verify(&with), "{n} bytes and their checksum");
            }
        }
        for acc in [
            0,
            1,
            0xfffe,
            0xffff,
            0x1_fffe,
            0x1_ffff,
            0x2_fffe,
            0xffff_ffff,
            5 * 0xffff_ffff,
            0xdead_beef_f00d,
            u64::MAX - 1,
            u64::MAX,
        ]
        .into_iter()
        .chain((0..10_000u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (i % 40)))
        {
            assert_eq!(folds_to_ffff(acc), fold(acc) == 0xffff, "{acc:#x}");
        }
        let h: [u8; 20] = bytes[..20].try_into().unwrap();
        assert_eq!(verify20(&h), verify(&h));
    }

    #[test]
    fn a_header_with_its_checksum_verifies() {
        // An IPv4 header, 198.18.0.1 -> 198.18.0.199, UDP, 115 bytes: checksum ad8d.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 198, 18, 0, 1,
            198, 18, 0, 199,
        ];
        assert_eq!(checksum(&h), 0xad8d);
        h[10..12].copy_from_slice(&0xad8du16.to_be_bytes());
        assert!(verify(&h) && verify20(&h));
        h[8] ^= 1;
        assert!(!verify(&h) && !verify20(&h));
    }
}
