//! The port's XDP program: load, inspect what is already on the interface, attach, XSKMAP.
//!
//! Attach uses a BPF link (`BPF_LINK_CREATE` with `BPF_XDP`), not the netlink `IFLA_XDP` path:
//! a link is owned by its file descriptor, so when the daemon exits, normally or by SIGKILL, the
//! kernel detaches the program by itself and no program of ours is left on the interface.
//!
//! At load, whatever is attached already is looked at: a program named [`PROG_NAME`] is ours,
//! left by an instance attached in netlink mode (which survives its owner); it is replaced. A
//! foreign program is refused unless the operator forces it. A program held by a live link of
//! another process cannot be detached from here, and the error says so.

use std::{
    ffi::OsStr,
    io,
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
};

use libbpf_rs::{MapCore, MapFlags, Object, ObjectBuilder, Xdp, XdpFlags, query::ProgInfoIter};

use crate::params::{AttachedMode, XdpMode};

/// The name of our XDP program, as the kernel reports it (`bpftool net`, `ip link`).
pub const PROG_NAME: &str = "isopath_xdp";
/// How long start-up waits for the BPF link of a just-killed instance to be released.
const LINK_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
/// Entries of the XSKMAP: the most queues a port can have sockets on.
/// Must match `MAX_QUEUES` in `src/bpf/isopath.bpf.c`.
pub const MAX_QUEUES: u32 = 64;

const OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/isopath.bpf.o"));
const STAT_RX_REDIRECT: u32 = 0;
const STAT_RX_DROP_NO_SOCKET: u32 = 1;
/// `XDP_ATTACHED_DRV` / `XDP_ATTACHED_SKB` of include/uapi/linux/if_link.h.
const XDP_ATTACHED_DRV: u8 = 1;
const XDP_ATTACHED_SKB: u8 = 2;
/// `NETDEV_XDP_ACT_XSK_ZEROCOPY` of include/uapi/linux/netdev.h.
const NETDEV_XDP_ACT_XSK_ZEROCOPY: u64 = 1 << 5;

/// Errors of the XDP program's life. Each names the interface.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// The embedded object could not be opened or loaded (verifier, BTF, permissions).
    #[error("{ifname}: loading the XDP program: {source}")]
    Load {
        /// Interface.
        ifname: String,
        /// libbpf's error.
        source: libbpf_rs::Error,
    },
    /// Another program is attached and `--force` was not given.
    #[error(
        "{ifname}: a foreign XDP program is attached (id {id}, name {name:?}); refusing to replace it (use --force to replace it)"
    )]
    Foreign {
        /// Interface.
        ifname: String,
        /// Its program id.
        id: u32,
        /// Its program name.
        name: String,
    },
    /// The attached program could not be detached.
    #[error("{ifname}: cannot detach the XDP program already attached (id {id}): {source}{hint}")]
    Detach {
        /// Interface.
        ifname: String,
        /// Its program id.
        id: u32,
        /// The error.
        source: io::Error,
        /// A hint when the cause is known.
        hint: &'static str,
    },
    /// Attaching failed.
    #[error("{ifname}: attaching the XDP program in {mode} mode: {source}")]
    Attach {
        /// Interface.
        ifname: String,
        /// The mode tried last.
        mode: AttachedMode,
        /// The OS error.
        source: io::Error,
    },
    /// Registering a socket in the XSKMAP failed.
    #[error("{ifname}: registering queue {queue} in the XSKMAP: {source}")]
    XskMap {
        /// Interface.
        ifname: String,
        /// Queue id.
        queue: u32,
        /// libbpf's error.
        source: libbpf_rs::Error,
    },
    /// A queue id beyond the XSKMAP.
    #[error("{ifname}: queue {queue} is beyond the {MAX_QUEUES} queues the XDP program serves")]
    QueueRange {
        /// Interface.
        ifname: String,
        /// Queue id.
        queue: u32,
    },
    /// Reading the program's counters failed.
    #[error("{ifname}: reading XDP counters: {source}")]
    Stats {
        /// Interface.
        ifname: String,
        /// libbpf's error.
        source: libbpf_rs::Error,
    },
}

/// The compiled program object (ELF), as embedded in the binary. Tools and tests that need the
/// same program outside the daemon (e.g. `ip link set dev X xdp obj FILE`) write it out.
pub fn object() -> &'static [u8] {
    OBJECT
}

/// What was on the interface before we loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Previous {
    /// Nothing.
    None,
    /// A program of ours (left by a crashed instance, attached in netlink mode): replaced.
    Stale {
        /// Its program id.
        id: u32,
    },
    /// A foreign program, replaced because the operator forced it.
    ForcedForeign {
        /// Its program id.
        id: u32,
        /// Its name.
        name: String,
    },
}

/// Counters kept by the XDP program, summed over CPUs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct XdpStats {
    /// Frames redirected into a socket.
    pub rx_redirect: u64,
    /// Frames on a queue without a socket, dropped.
    pub rx_drop_no_socket: u64,
}

/// Our program on one interface.
pub struct XdpProgram {
    ifname: String,
    ifindex: u32,
    object: Object,
    link: Option<OwnedFd>,
    mode: Option<AttachedMode>,
    previous: Previous,
    zero_copy_capable: bool,
}

impl std::fmt::Debug for XdpProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpProgram")
            .field("ifname", &self.ifname)
            .field("mode", &self.mode)
            .field("previous", &self.previous)
            .finish()
    }
}

impl XdpProgram {
    /// Loads the program for `ifname` (not attached yet) and clears the interface: a stale
    /// program of ours is detached; a foreign one is refused unless `force`.
    ///
    /// # Errors
    /// [`XdpError::Foreign`] before anything is changed; [`XdpError::Load`], [`XdpError::Detach`].
    pub fn load(ifname: &str, ifindex: u32, force: bool) -> Result<Self, XdpError> {
        let load_err = |source| XdpError::Load {
            ifname: ifname.to_owned(),
            source,
        };
        let object = ObjectBuilder::default()
            .open_memory(OBJECT)
            .map_err(load_err)?
            .load()
            .map_err(load_err)?;
        let mut prog = Self {
            ifname: ifname.to_owned(),
            ifindex,
            object,
            link: None,
            mode: None,
            previous: Previous::None,
            zero_copy_capable: false,
        };
        let query = prog.query();
        prog.zero_copy_capable = query.feature_flags & NETDEV_XDP_ACT_XSK_ZEROCOPY != 0;
        if query.prog_id != 0 {
            let id = query.prog_id;
            let name = prog_name(id).unwrap_or_default();
            prog.previous = if name == PROG_NAME {
                Previous::Stale { id }
            } else if force {
                Previous::ForcedForeign { id, name }
            } else {
                return Err(XdpError::Foreign {
                    ifname: ifname.to_owned(),
                    id,
                    name,
                });
            };
            let flags = match query.attach_mode {
                XDP_ATTACHED_SKB => XdpFlags::SKB_MODE,
                XDP_ATTACHED_DRV => XdpFlags::DRV_MODE,
                _ => XdpFlags::empty(),
            };
            // A program of ours held by a BPF link belongs to an instance that is either alive
            // or just died: the kernel releases a dead process's links through deferred work,
            // so for a few milliseconds after a SIGKILL the old program is still attached.
            // Wait for it (bounded); a live instance keeps it and the error says so.
            let deadline = std::time::Instant::now() + LINK_RELEASE_WAIT;
            loop {
                let detached = Xdp::new(prog.program().as_fd())
                    .detach(ifindex as i32, XdpFlags::from_bits_retain(flags.bits()));
                let e = match detached {
                    Ok(()) => break,
                    Err(e) => e,
                };
                // libbpf-rs maps errnos without an io::ErrorKind of their own (EBUSY) to
                // Other and keeps the OS text.
                let busy = e.to_string().contains("busy");
                let ours = matches!(prog.previous, Previous::Stale { .. });
                if busy && ours && std::time::Instant::now() < deadline {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    if prog.query().prog_id == 0 {
                        break; // the dead instance's link is gone, and its program with it
                    }
                    continue;
                }
                return Err(XdpError::Detach {
                    ifname: ifname.to_owned(),
                    id,
                    source: io::Error::other(e.to_string()),
                    hint: if busy {
                        " (it is held by a live BPF link: is another isopath instance running on this interface?)"
                    } else {
                        ""
                    },
                });
            }
        }
        Ok(prog)
    }

    #[expect(
        clippy::expect_used,
        reason = "the embedded object is compiled from src/bpf/isopath.bpf.c, which defines it; \
                  the test embedded_object_has_the_program_and_maps checks it"
    )]
    fn program(&self) -> libbpf_rs::Program<'_> {
        self.object
            .progs()
            .find(|p| p.name() == OsStr::new(PROG_NAME))
            .expect("the embedded object defines isopath_xdp (compiled from src/bpf/isopath.bpf.c)")
    }

    #[expect(
        clippy::expect_used,
        reason = "only called with the two map names the embedded object defines (see the test \
                  embedded_object_has_the_program_and_maps)"
    )]
    fn map(&self, name: &str) -> libbpf_rs::Map<'_> {
        self.object
            .maps()
            .find(|m| m.name() == OsStr::new(name))
            .expect("the embedded object defines the xsks and stats maps")
    }

    fn query(&self) -> libbpf_sys::bpf_xdp_query_opts {
        // The Xdp helper wants a program fd; query and detach do not use it.
        let prog = self.program();
        Xdp::new(prog.as_fd())
            .query(self.ifindex as i32, XdpFlags::empty())
            .unwrap_or_default()
    }

    /// Stores socket `fd` at `queue` in the XSKMAP: from now on the queue's frames go to it.
    ///
    /// # Errors
    /// [`XdpError::QueueRange`], [`XdpError::XskMap`].
    pub fn register(&self, queue: u32, fd: i32) -> Result<(), XdpError> {
        if queue >= MAX_QUEUES {
            return Err(XdpError::QueueRange {
                ifname: self.ifname.clone(),
                queue,
            });
        }
        self.map("xsks")
            .update(
                &queue.to_ne_bytes(),
                &(fd as u32).to_ne_bytes(),
                MapFlags::ANY,
            )
            .map_err(|source| XdpError::XskMap {
                ifname: self.ifname.clone(),
                queue,
                source,
            })
    }

    /// Attaches the program through a BPF link in the asked mode.
    ///
    /// # Errors
    /// [`XdpError::Attach`] naming the last mode tried.
    pub fn attach(&mut self, mode: XdpMode) -> Result<AttachedMode, XdpError> {
        let order: &[AttachedMode] = match mode {
            XdpMode::Native => &[AttachedMode::Native],
            XdpMode::Generic => &[AttachedMode::Generic],
            XdpMode::NativeOrGeneric => &[AttachedMode::Native, AttachedMode::Generic],
        };
        let prog_fd = self.program().as_fd().as_raw_fd();
        let mut last = None;
        for &m in order {
            match link_create(prog_fd, self.ifindex, m) {
                Ok(fd) => {
                    self.link = Some(fd);
                    self.mode = Some(m);
                    return Ok(m);
                }
                Err(e) => last = Some((m, e)),
            }
        }
        // `order` is never empty, so `last` is set; the fallback only keeps this panic-free.
        let (mode, source) = last.unwrap_or((
            AttachedMode::Native,
            io::Error::other("no attach mode tried"),
        ));
        Err(XdpError::Attach {
            ifname: self.ifname.clone(),
            mode,
            source,
        })
    }

    /// Detaches (closes the link). Also happens on drop.
    pub fn detach(&mut self) {
        self.link = None;
        self.mode = None;
    }

    /// The mode the program is attached in, if attached.
    pub fn mode(&self) -> Option<AttachedMode> {
        self.mode
    }

    /// What was on the interface before.
    pub fn previous(&self) -> &Previous {
        &self.previous
    }

    /// Whether the driver advertises AF_XDP zero-copy (`NETDEV_XDP_ACT_XSK_ZEROCOPY`).
    pub fn zero_copy_capable(&self) -> bool {
        self.zero_copy_capable
    }

    /// The program's counters, summed over CPUs.
    ///
    /// # Errors
    /// [`XdpError::Stats`].
    pub fn stats(&self) -> Result<XdpStats, XdpError> {
        let map = self.map("stats");
        let read = |key: u32| -> Result<u64, XdpError> {
            let per_cpu = map
                .lookup_percpu(&key.to_ne_bytes(), MapFlags::ANY)
                .map_err(|source| XdpError::Stats {
                    ifname: self.ifname.clone(),
                    source,
                })?
                .unwrap_or_default();
            Ok(per_cpu
                .iter()
                .filter_map(|v| v.get(..8).and_then(|b| b.try_into().ok()))
                .map(u64::from_ne_bytes)
                .sum())
        };
        Ok(XdpStats {
            rx_redirect: read(STAT_RX_REDIRECT)?,
            rx_drop_no_socket: read(STAT_RX_DROP_NO_SOCKET)?,
        })
    }
}

/// The name of the program with id `id`, if it still exists.
fn prog_name(id: u32) -> Option<String> {
    ProgInfoIter::default()
        .find(|p| p.id == id)
        .map(|p| p.name.to_string_lossy().into_owned())
}

fn link_create(prog_fd: i32, ifindex: u32, mode: AttachedMode) -> io::Result<OwnedFd> {
    // SAFETY: bpf_link_create_opts is plain data for which all-zero is the documented default.
    let mut opts: libbpf_sys::bpf_link_create_opts = unsafe { std::mem::zeroed() };
    opts.sz = std::mem::size_of::<libbpf_sys::bpf_link_create_opts>() as _;
    opts.flags = match mode {
        AttachedMode::Native => libbpf_sys::XDP_FLAGS_DRV_MODE,
        AttachedMode::Generic => libbpf_sys::XDP_FLAGS_SKB_MODE,
    };
    // SAFETY: `opts` is initialised with its size set; prog_fd is a loaded program's fd that
    // outlives the call; libbpf returns a new fd or a negative errno.
    let fd =
        unsafe { libbpf_sys::bpf_link_create(prog_fd, ifindex as i32, libbpf_sys::BPF_XDP, &opts) };
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(-fd));
    }
    // SAFETY: `fd` is a fresh link descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_object_has_the_program_and_maps() {
        let open = ObjectBuilder::default()
            .open_memory(OBJECT)
            .expect("the embedded ELF opens");
        assert!(open.progs().any(|p| p.name() == OsStr::new(PROG_NAME)));
        for map in ["xsks", "stats"] {
            assert!(
                open.maps().any(|m| m.name() == OsStr::new(map)),
                "map {map}"
            );
        }
    }
}
