//! Captures at run time (`capture start`, `capture stop`).

use std::path::Path;

use tracing::info;

use super::Daemon;
use crate::{
    capture::{self, Capture},
    registry::DeviceKind,
    request::CaptureReply,
};

impl Daemon {
    pub(super) fn capture_start(
        &mut self,
        target: &str,
        file: &str,
        dirs: &str,
    ) -> Result<CaptureReply, String> {
        let err = Err;
        let Some(dirs) = capture::parse_dirs(dirs) else {
            return err(format!("direction {dirs:?}: expected in, out or both"));
        };
        // A port's tap spans the port, a bond's its members (as the registry has them now).
        let devs = self.registry.devices();
        let found = devs
            .find(target)
            .filter(|(_, d)| d.kind != DeviceKind::Loopback);
        let Some((id, dev)) = found else {
            return err(format!("no port or bond named {target:?}"));
        };
        let (tap, ifindexes) = (&dev.tap, devs.span(id));
        if self.plane.captures.iter().any(|c| c.target == target) {
            return err(format!("a capture already runs on {target}"));
        }
        let path = Path::new(file);
        if !path.is_absolute() {
            return err(format!(
                "{file:?}: the capture file must be an absolute path"
            ));
        }
        // The packet sockets that hold promiscuity need CAP_NET_RAW, permitted but not
        // effective after start-up: raised for this call only.
        let net_raw = crate::privs::need(caps::Capability::CAP_NET_RAW);
        let started = crate::privs::with_effective(net_raw.as_slice(), || {
            Capture::start(target, path, dirs, tap.clone(), &ifindexes)
        })
        .map_err(|e| e.to_string())
        .and_then(|r| r);
        match started {
            Ok(c) => {
                info!(target, file, "capture started");
                let capture = c.status();
                self.plane.captures.push(c);
                Ok(CaptureReply { ok: true, capture })
            }
            Err(e) => err(e),
        }
    }

    pub(super) fn capture_stop(&mut self, target: &str) -> Result<CaptureReply, String> {
        match self.plane.captures.iter().position(|c| c.target == target) {
            Some(i) => {
                let capture = self.plane.captures.remove(i).stop();
                info!(target, "capture stopped");
                Ok(CaptureReply { ok: true, capture })
            }
            None => Err(format!("no capture runs on {target:?}")),
        }
    }
}
