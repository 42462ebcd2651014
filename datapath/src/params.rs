//! Validated parameters of the frame path.
//!
//! Everything a port or a worker is sized with is checked once, here, when control converts its
//! configuration: later code holds these newtypes and cannot see a ring size that is not a power
//! of two or a frame too small for the MTU ("parse, don't validate").

use std::fmt;

/// Why a parameter was refused. Names the parameter so the operator can find it in the config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// A ring size outside what the kernel accepts.
    #[error("{field} = {value}: must be a power of two between {min} and {max}")]
    RingSize {
        /// The configuration field.
        field: &'static str,
        /// The refused value.
        value: u32,
        /// Smallest accepted value.
        min: u32,
        /// Largest accepted value.
        max: u32,
    },
    /// A UMEM frame size outside what aligned-mode AF_XDP accepts.
    #[error(
        "{field} = {value}: must be a power of two between {min} and {max} (AF_XDP aligned chunks; 2048 holds a 1500-byte MTU frame)"
    )]
    FrameSize {
        /// The configuration field.
        field: &'static str,
        /// The refused value.
        value: u32,
        /// Smallest accepted value.
        min: u32,
        /// Largest accepted value.
        max: u32,
    },
    /// A burst size outside 1..=MAX_BURST.
    #[error("{field} = {value}: must be between 1 and {max}")]
    Burst {
        /// The configuration field.
        field: &'static str,
        /// The refused value.
        value: u32,
        /// Largest accepted value.
        max: u32,
    },
    /// Too few UMEM frames to fill every ring a worker owns.
    #[error("{field} = {value}: a worker with these rings needs at least {needed} frames")]
    FrameCount {
        /// The configuration field.
        field: &'static str,
        /// The refused value.
        value: u32,
        /// The smallest count that fills every fill ring and leaves room for TX.
        needed: u32,
    },
}

/// Size of one of the four AF_XDP rings: a power of two (the kernel masks indices with size - 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RingSize(u32);

impl RingSize {
    /// Smallest ring we accept. The kernel takes smaller, but a ring smaller than two bursts
    /// stalls the worker.
    pub const MIN: u32 = 64;
    /// Largest ring we accept (the kernel's limit is far higher; this keeps UMEMs sane).
    pub const MAX: u32 = 16384;
    /// The default for every ring.
    pub const DEFAULT: RingSize = RingSize(2048);

    /// Validates `value` for the configuration field `field`.
    ///
    /// # Errors
    /// [`ParamError::RingSize`] if `value` is not a power of two in `MIN..=MAX`.
    pub fn new(field: &'static str, value: u32) -> Result<Self, ParamError> {
        if value.is_power_of_two() && (Self::MIN..=Self::MAX).contains(&value) {
            Ok(Self(value))
        } else {
            Err(ParamError::RingSize {
                field,
                value,
                min: Self::MIN,
                max: Self::MAX,
            })
        }
    }

    /// The size in descriptors.
    #[inline]
    pub fn get(self) -> u32 {
        self.0
    }
}

/// Size of one UMEM frame (chunk). Aligned mode: a power of two, at least 2048 and at most a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameSize(u32);

impl FrameSize {
    /// `XDP_UMEM_MIN_CHUNK_SIZE` in the kernel.
    pub const MIN: u32 = 2048;
    /// A chunk may not cross a page in aligned mode.
    pub const MAX: u32 = 4096;
    /// The default frame size.
    pub const DEFAULT: FrameSize = FrameSize(2048);

    /// Validates `value` for the configuration field `field`.
    ///
    /// # Errors
    /// [`ParamError::FrameSize`] if `value` is not a power of two in `MIN..=MAX`.
    pub fn new(field: &'static str, value: u32) -> Result<Self, ParamError> {
        if value.is_power_of_two() && (Self::MIN..=Self::MAX).contains(&value) {
            Ok(Self(value))
        } else {
            Err(ParamError::FrameSize {
                field,
                value,
                min: Self::MIN,
                max: Self::MAX,
            })
        }
    }

    /// The size in bytes.
    #[inline]
    pub fn get(self) -> u32 {
        self.0
    }
}

/// The most frames a worker handles per RX burst. Sized for the stack arrays in the worker.
pub const MAX_BURST: u32 = 256;

/// Frames taken from one RX ring per poll (DPDK's `MAX_PKT_BURST`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Burst(u32);

impl Burst {
    /// The default burst: 64 frames.
    pub const DEFAULT: Burst = Burst(64);

    /// Validates `value` for the configuration field `field`.
    ///
    /// # Errors
    /// [`ParamError::Burst`] if `value` is 0 or above [`MAX_BURST`].
    pub fn new(field: &'static str, value: u32) -> Result<Self, ParamError> {
        if (1..=MAX_BURST).contains(&value) {
            Ok(Self(value))
        } else {
            Err(ParamError::Burst {
                field,
                value,
                max: MAX_BURST,
            })
        }
    }

    /// The burst in frames.
    #[inline]
    pub fn get(self) -> usize {
        self.0 as usize
    }
}

/// Ring and frame sizes of the sockets one worker owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingParams {
    /// RX ring (kernel → worker).
    pub rx: RingSize,
    /// TX ring (worker → kernel).
    pub tx: RingSize,
    /// Fill ring (free frames, worker → kernel).
    pub fill: RingSize,
    /// Completion ring (sent frames, kernel → worker).
    pub comp: RingSize,
    /// UMEM frame size.
    pub frame_size: FrameSize,
}

impl Default for RingParams {
    fn default() -> Self {
        Self {
            rx: RingSize::DEFAULT,
            tx: RingSize::DEFAULT,
            fill: RingSize::DEFAULT,
            comp: RingSize::DEFAULT,
            frame_size: FrameSize::DEFAULT,
        }
    }
}

impl RingParams {
    /// Frames a worker with `sockets` sockets needs: a full fill ring and a full TX ring each, so
    /// that neither ring can starve the other.
    pub fn frames_needed(&self, sockets: u32) -> u32 {
        sockets.saturating_mul(self.fill.get().saturating_add(self.tx.get()))
    }

    /// Validates a configured frame count against what `sockets` sockets need; `None` picks the
    /// minimum.
    ///
    /// # Errors
    /// [`ParamError::FrameCount`] if `configured` is below [`Self::frames_needed`].
    pub fn frame_count(
        &self,
        field: &'static str,
        configured: Option<u32>,
        sockets: u32,
    ) -> Result<u32, ParamError> {
        let needed = self.frames_needed(sockets);
        match configured {
            None => Ok(needed),
            Some(value) if value >= needed => Ok(value),
            Some(value) => Err(ParamError::FrameCount {
                field,
                value,
                needed,
            }),
        }
    }
}

/// How a socket's bind went: zero-copy (the NIC DMAs into UMEM) or copy mode (the kernel copies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindMode {
    /// `XDP_ZEROCOPY`.
    ZeroCopy,
    /// `XDP_COPY`: what veth and drivers without AF_XDP zero-copy support give.
    Copy,
}

impl fmt::Display for BindMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ZeroCopy => "zero-copy",
            Self::Copy => "copy",
        })
    }
}

/// What the operator asked for when binding sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ZeroCopy {
    /// Try zero-copy, fall back to copy mode and say so (the default).
    #[default]
    Auto,
    /// Zero-copy or fail.
    Require,
    /// Copy mode only.
    Off,
}

/// XDP attach mode for the port's program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XdpMode {
    /// Driver (native) mode or fail (the default).
    #[default]
    Native,
    /// Generic (skb) mode, explicitly.
    Generic,
    /// Native, falling back to generic with a warning: an explicit opt-in.
    NativeOrGeneric,
}

/// The attach mode a program actually got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachedMode {
    /// `XDP_FLAGS_DRV_MODE`.
    Native,
    /// `XDP_FLAGS_SKB_MODE`.
    Generic,
}

impl fmt::Display for AttachedMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Native => "native",
            Self::Generic => "generic",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_size_must_be_power_of_two_in_range() {
        assert_eq!(RingSize::new("rx", 2048).map(RingSize::get), Ok(2048));
        for bad in [0, 1, 63, 1000, 2047, 32768] {
            let err = RingSize::new("rx_ring_size", bad).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with(&format!("rx_ring_size = {bad}:")),
                "{err}"
            );
        }
    }

    #[test]
    fn frame_size_refuses_too_small_and_odd() {
        assert!(FrameSize::new("frame_size", 2048).is_ok());
        assert!(FrameSize::new("frame_size", 4096).is_ok());
        for bad in [0, 1024, 2047, 3000, 8192] {
            let err = FrameSize::new("frame_size", bad).unwrap_err();
            assert!(err.to_string().contains("frame_size"), "{err}");
        }
    }

    #[test]
    fn frame_count_covers_fill_and_tx_of_every_socket() {
        let p = RingParams::default();
        assert_eq!(p.frames_needed(4), 4 * (2048 + 2048));
        assert_eq!(p.frame_count("frame_count", None, 2), Ok(8192));
        assert_eq!(p.frame_count("frame_count", Some(10000), 2), Ok(10000));
        assert_eq!(
            p.frame_count("frame_count", Some(100), 2),
            Err(ParamError::FrameCount {
                field: "frame_count",
                value: 100,
                needed: 8192
            })
        );
    }

    #[test]
    fn burst_bounds() {
        assert!(Burst::new("burst", 0).is_err());
        assert!(Burst::new("burst", MAX_BURST + 1).is_err());
        assert_eq!(Burst::new("burst", 32).map(Burst::get), Ok(32));
    }
}
