//! Captures: drain a tap into a pcap file that `tcpdump -r` reads.
//!
//! A capture on a port shows exactly what crossed that port, both directions (on a bond's
//! backup member: what arrived there, though the datapath drops it). A capture on a bond shows
//! the bond's traffic both ways: what the active member(s) delivered and what left through the
//! bond. Directions can be filtered. While a capture runs each of its ports counts one more
//! promiscuity holder in the registry (`set_promiscuity(+1)`); the daemon takes the kernel's
//! membership (the way tcpdump holds it) only when a port's count goes 0 → 1, and releases it
//! on 1 → 0. A capture only keeps which ports it counts on ([`Capture::held`]).

use std::{
    fs::File,
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
    sync::Arc,
};

use crate::status::CaptureStatus;
use isopath_datapath::tap::{DIR_IN, DIR_OUT, SNAPLEN, Tap, TapRecord};

/// `LINKTYPE_ETHERNET`.
const LINKTYPE_ETHERNET: u32 = 1;

/// Writes classic pcap (microsecond timestamps).
#[derive(Debug)]
pub struct PcapWriter {
    w: BufWriter<File>,
}

impl PcapWriter {
    /// Creates (or truncates) `path` and writes the file header.
    ///
    /// # Errors
    /// The file cannot be created or written.
    pub fn create(path: &Path) -> io::Result<Self> {
        let mut w = BufWriter::new(File::create(path)?);
        w.write_all(&0xa1b2_c3d4u32.to_le_bytes())?;
        w.write_all(&2u16.to_le_bytes())?;
        w.write_all(&4u16.to_le_bytes())?;
        w.write_all(&0i32.to_le_bytes())?;
        w.write_all(&0u32.to_le_bytes())?;
        w.write_all(&(SNAPLEN as u32).to_le_bytes())?;
        w.write_all(&LINKTYPE_ETHERNET.to_le_bytes())?;
        Ok(Self { w })
    }

    /// Appends one record.
    ///
    /// # Errors
    /// The write fails.
    pub fn write(&mut self, r: &TapRecord) -> io::Result<()> {
        let us = r.unix_ns / 1_000;
        self.w.write_all(&((us / 1_000_000) as u32).to_le_bytes())?;
        self.w.write_all(&((us % 1_000_000) as u32).to_le_bytes())?;
        self.w.write_all(&u32::from(r.caplen).to_le_bytes())?;
        self.w.write_all(&r.len.to_le_bytes())?;
        self.w.write_all(r.data())
    }

    /// Flushes to the file.
    ///
    /// # Errors
    /// The flush fails.
    pub fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

/// Parses a direction filter: "in", "out" or "both".
pub fn parse_dirs(s: &str) -> Option<u8> {
    match s {
        "in" => Some(DIR_IN),
        "out" => Some(DIR_OUT),
        "both" => Some(DIR_IN | DIR_OUT),
        _ => None,
    }
}

fn dirs_name(d: u8) -> &'static str {
    match d {
        DIR_IN => "in",
        DIR_OUT => "out",
        _ => "both",
    }
}

/// A running capture.
#[derive(Debug)]
pub struct Capture {
    /// Port or bond name.
    pub target: String,
    /// The pcap file.
    pub path: PathBuf,
    dirs: u8,
    tap: Arc<Tap>,
    writer: PcapWriter,
    /// The ports (by ifindex) this capture counts one promiscuity holder on.
    held: Vec<u32>,
    written: u64,
    write_errors: u64,
}

impl Capture {
    /// Starts capturing `dirs` on `tap` into `path`; it counts on `ifindexes` (the caller adds
    /// their promiscuity).
    ///
    /// # Errors
    /// The file cannot be created.
    pub fn start(
        target: &str,
        path: &Path,
        dirs: u8,
        tap: Arc<Tap>,
        ifindexes: &[u32],
    ) -> Result<Self, String> {
        let writer =
            PcapWriter::create(path).map_err(|e| format!("creating {}: {e}", path.display()))?;
        tap.start(dirs);
        Ok(Self {
            target: target.to_owned(),
            path: path.to_owned(),
            dirs,
            tap,
            writer,
            held: ifindexes.to_vec(),
            written: 0,
            write_errors: 0,
        })
    }

    /// Counts on one more interface (a member added to a captured bond): true if it was not
    /// counted yet (the caller then adds one to its promiscuity).
    pub fn hold(&mut self, ifindex: u32) -> bool {
        let new = !self.held.contains(&ifindex);
        if new {
            self.held.push(ifindex);
        }
        new
    }

    /// Stops counting on an interface (a member released from a captured bond): true if it
    /// was counted (the caller then takes one from its promiscuity).
    pub fn release(&mut self, ifindex: u32) -> bool {
        match self.held.iter().position(|&i| i == ifindex) {
            Some(k) => {
                self.held.remove(k);
                true
            }
            None => false,
        }
    }

    /// The interfaces this capture counts on.
    pub fn held(&self) -> &[u32] {
        &self.held
    }

    /// Writes what the workers queued.
    pub fn drain(&mut self) {
        while let Some(r) = self.tap.pop() {
            match self.writer.write(&r) {
                Ok(()) => self.written += 1,
                Err(_) => self.write_errors += 1,
            }
        }
        if self.writer.flush().is_err() {
            self.write_errors += 1;
        }
    }

    /// Stops the capture: no more records, the queue drained and the file flushed (the caller
    /// takes its promiscuity back from [`Self::held`] first).
    pub fn stop(mut self) -> CaptureStatus {
        self.tap.stop();
        self.drain();
        self.status()
    }

    /// The capture's state.
    pub fn status(&self) -> CaptureStatus {
        CaptureStatus {
            target: self.target.clone(),
            file: self.path.display().to_string(),
            direction: dirs_name(self.dirs).to_owned(),
            captured: self.tap.captured(),
            dropped: self.tap.dropped(),
            written: self.written,
            write_errors: self.write_errors,
            snaplen: SNAPLEN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcap_file_has_header_and_records() {
        let path = std::env::temp_dir().join(format!("isopath-pcap-{}.pcap", std::process::id()));
        let tap = Tap::new(16);
        tap.start(DIR_IN | DIR_OUT);
        tap.record(&[0xaa; 60], DIR_IN, 1_700_000_000_123_456_789);
        tap.record(&[0xbb; 600], DIR_OUT, 1_700_000_001_000_000_000);
        let mut w = PcapWriter::create(&path).unwrap();
        while let Some(r) = tap.pop() {
            w.write(&r).unwrap();
        }
        w.flush().unwrap();
        let b = std::fs::read(&path).unwrap();
        assert_eq!(&b[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        assert_eq!(
            u32::from_le_bytes(b[20..24].try_into().unwrap()),
            LINKTYPE_ETHERNET
        );
        let rec = &b[24..];
        assert_eq!(
            u32::from_le_bytes(rec[0..4].try_into().unwrap()),
            1_700_000_000
        );
        assert_eq!(u32::from_le_bytes(rec[4..8].try_into().unwrap()), 123_456);
        assert_eq!(u32::from_le_bytes(rec[8..12].try_into().unwrap()), 60);
        let rec2 = &rec[16 + 60..];
        assert_eq!(
            u32::from_le_bytes(rec2[8..12].try_into().unwrap()),
            SNAPLEN as u32
        );
        assert_eq!(u32::from_le_bytes(rec2[12..16].try_into().unwrap()), 600);
        assert_eq!(b.len(), 24 + 16 + 60 + 16 + SNAPLEN);
        let _ = std::fs::remove_file(path);
        assert_eq!(parse_dirs("both"), Some(DIR_IN | DIR_OUT));
        assert_eq!(parse_dirs("sideways"), None);
    }
}
