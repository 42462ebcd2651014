//! Captures at run time (`capture start`, `capture stop`).

use std::path::Path;

use tracing::info;

use super::{Daemon, promisc::Change};
use crate::{
    capture::{self, Capture},
    registry::{DeviceId, DeviceKind},
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
        let c = Capture::start(target, path, dirs, tap.clone(), &ifindexes)?;
        // Each port it spans counts one more promiscuity holder; the first takes the
        // kernel's membership. A failure undoes what was added.
        let ports: Vec<DeviceId> = ifindexes
            .iter()
            .filter_map(|&i| self.port_by_ifindex(i))
            .collect();
        for (k, &id) in ports.iter().enumerate() {
            if let Err(e) = self.promisc_change(id, Change::Holders(1)) {
                for &done in &ports[..k] {
                    let _ = self.promisc_change(done, Change::Holders(-1));
                }
                drop(c.stop());
                return err(format!(
                    "setting promiscuous mode for the capture on {target}: {e}"
                ));
            }
        }
        info!(target, file, "capture started");
        let capture = c.status();
        self.plane.captures.push(c);
        Ok(CaptureReply { ok: true, capture })
    }

    /// Takes back the promiscuity capture `c` counted on its ports.
    fn capture_unhold(&mut self, c: &Capture) {
        for &ifindex in c.held() {
            if let Some(id) = self.port_by_ifindex(ifindex)
                && let Err(e) = self.promisc_change(id, Change::Holders(-1))
            {
                tracing::warn!(target = %c.target, ifindex, "promiscuity: {e}");
            }
        }
    }

    pub(super) fn capture_stop(&mut self, target: &str) -> Result<CaptureReply, String> {
        match self.plane.captures.iter().position(|c| c.target == target) {
            Some(i) => {
                let c = self.plane.captures.remove(i);
                self.capture_unhold(&c);
                let capture = c.stop();
                info!(target, "capture stopped");
                Ok(CaptureReply { ok: true, capture })
            }
            None => Err(format!("no capture runs on {target:?}")),
        }
    }
}
