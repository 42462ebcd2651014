//! Classic pcap files (libpcap format, micro- or nanosecond timestamps, either byte order):
//! reading Ethernet frames for replay.

use std::path::Path;

use anyhow::{Context, Result, bail};

const LINKTYPE_ETHERNET: u32 = 1;

/// The Ethernet frames of a pcap file, in order (each cut to its captured length).
pub(crate) fn read(path: &Path) -> Result<Vec<Vec<u8>>> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&data).with_context(|| format!("parsing {}", path.display()))
}

pub(crate) fn parse(data: &[u8]) -> Result<Vec<Vec<u8>>> {
    if data.len() < 24 {
        bail!("shorter than a pcap header");
    }
    let magic = u32::from_le_bytes(data[0..4].try_into().unwrap());
    let le = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        _ => bail!("not a pcap file (magic {magic:#010x}; pcapng is not supported)"),
    };
    let u32_at = |i: usize| -> u32 {
        let b: [u8; 4] = data[i..i + 4].try_into().unwrap();
        if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    let linktype = u32_at(20) & 0x0fff_ffff;
    if linktype != LINKTYPE_ETHERNET {
        bail!("link type {linktype} is not Ethernet");
    }
    let mut frames = Vec::new();
    let mut at = 24;
    while at + 16 <= data.len() {
        let caplen = u32_at(at + 8) as usize;
        let start = at + 16;
        let Some(frame) = data.get(start..start + caplen) else {
            bail!("record at byte {at} is truncated");
        };
        if (14..=2048).contains(&caplen) {
            frames.push(frame.to_vec());
        }
        at = start + caplen;
    }
    if frames.is_empty() {
        bail!("no Ethernet frame of 14..=2048 bytes");
    }
    Ok(frames)
}

/// A pcap file (microsecond timestamps, little-endian) holding `frames`, for tests.
#[cfg(test)]
pub(crate) fn write(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, LINKTYPE_ETHERNET] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for (i, f) in frames.iter().enumerate() {
        for v in [i as u32, 0, f.len() as u32, f.len() as u32] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let frames = vec![vec![1u8; 60], vec![2u8; 1514]];
        assert_eq!(parse(&write(&frames)).unwrap(), frames);
    }

    #[test]
    fn refuses_garbage_and_truncation() {
        assert!(parse(&[0u8; 10]).is_err());
        assert!(parse(&[0u8; 40]).is_err());
        let mut f = write(&[vec![1u8; 60]]);
        f.truncate(f.len() - 1);
        assert!(parse(&f).is_err());
    }
}
