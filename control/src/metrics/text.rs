//! The Prometheus exposition formats: the classic text format (`text/plain; version=0.0.4`, the
//! default) and OpenMetrics 1.0 text (only when the scraper's `Accept` asks for it).
//!
//! Our own encoder rather than `prometheus-client`: that crate (0.26) writes OpenMetrics only,
//! and Debian's `promtool` 2.42 rejects its output (`promtool check metrics` exits 3); the
//! classic format is what every Prometheus scrapes. The encoder is a few rules (name and label
//! escaping, `_total` on counters, `# EOF` for OpenMetrics), pinned by golden tests below.

use std::fmt::Write as _;

/// Content type of the classic text format.
pub const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of OpenMetrics 1.0 text.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Which text format a scrape gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`.
    Classic,
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
}

impl Format {
    /// The format an `Accept` header asks for: OpenMetrics only when it names
    /// `application/openmetrics-text` (with a non-zero quality); classic otherwise.
    pub fn negotiate(accept: Option<&str>) -> Self {
        let Some(accept) = accept else {
            return Self::Classic;
        };
        for part in accept.split(',') {
            let mut fields = part.split(';').map(str::trim);
            if fields.next() != Some("application/openmetrics-text") {
                continue;
            }
            let q = fields
                .filter_map(|f| f.strip_prefix("q="))
                .find_map(|q| q.parse::<f64>().ok())
                .unwrap_or(1.0);
            if q > 0.0 {
                return Self::OpenMetrics;
            }
        }
        Self::Classic
    }

    /// The `Content-Type` of a page in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Classic => CLASSIC,
            Self::OpenMetrics => OPENMETRICS,
        }
    }
}

/// What a family measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (reset at start); its samples are named `NAME_total`.
    Counter,
    /// Goes up and down.
    Gauge,
}

/// One metric family: a name (without `_total`), help text, kind and samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    name: String,
    help: &'static str,
    kind: Kind,
    samples: Vec<Sample>,
}

/// One sample: its label pairs and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    labels: Vec<(&'static str, String)>,
    value: Value,
}

/// A sample's value: counts stay exact integers (a float loses them past 2^53).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// An integer count or level.
    Int(u64),
    /// A measurement in base units (seconds, ratios).
    Float(f64),
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Self::Int(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Self::Float(v)
    }
}

impl Family {
    /// A counter family; `name` without the `_total` suffix (it is added to the samples).
    ///
    /// # Panics
    /// In debug builds, if `name` is not a valid metric name or ends in `_total`.
    pub fn counter(name: impl Into<String>, help: &'static str) -> Self {
        Self::new(name.into(), help, Kind::Counter)
    }

    /// A gauge family.
    ///
    /// # Panics
    /// In debug builds, if `name` is not a valid metric name.
    pub fn gauge(name: impl Into<String>, help: &'static str) -> Self {
        Self::new(name.into(), help, Kind::Gauge)
    }

    fn new(name: String, help: &'static str, kind: Kind) -> Self {
        debug_assert!(valid_name(&name), "bad metric name {name:?}");
        debug_assert!(!name.ends_with("_total"), "{name}: the encoder adds _total");
        Self {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }

    /// Adds a sample with these labels.
    pub fn sample(
        &mut self,
        labels: &[(&'static str, &str)],
        value: impl Into<Value>,
    ) -> &mut Self {
        debug_assert!(labels.iter().all(|(k, _)| valid_label(k)), "{labels:?}");
        self.samples.push(Sample {
            labels: labels.iter().map(|(k, v)| (*k, (*v).to_string())).collect(),
            value: value.into(),
        });
        self
    }

    /// Adds a sample and returns the family (builder style).
    #[must_use]
    pub fn with(mut self, labels: &[(&'static str, &str)], value: impl Into<Value>) -> Self {
        self.sample(labels, value);
        self
    }

    /// The family's name (without `_total`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What it measures.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Its samples.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }
}

impl Sample {
    /// The value of label `key`, if it has one.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The sample's value.
    pub fn value(&self) -> Value {
        self.value
    }
}

fn valid_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

fn valid_label(n: &str) -> bool {
    let mut c = n.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
        && !n.starts_with("__")
}

/// Writes `families` in `format`. Families without samples are left out (a HELP/TYPE with no
/// sample says nothing, and OpenMetrics would still accept it, but the classic parsers differ).
pub fn encode(families: &[Family], format: Format, out: &mut String) {
    for f in families.iter().filter(|f| !f.samples.is_empty()) {
        let sample_name = match f.kind {
            Kind::Counter => format!("{}_total", f.name),
            Kind::Gauge => f.name.clone(),
        };
        // Classic: HELP/TYPE name the samples' name; OpenMetrics: the family's (no _total).
        let family_name = match (format, f.kind) {
            (Format::OpenMetrics, _) => f.name.as_str(),
            (Format::Classic, _) => sample_name.as_str(),
        };
        let kind = match f.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(out, "# HELP {family_name} {}", escape_help(f.help));
        let _ = writeln!(out, "# TYPE {family_name} {kind}");
        for s in &f.samples {
            out.push_str(&sample_name);
            if !s.labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in s.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", escape_label(v));
                }
                out.push('}');
            }
            match s.value {
                Value::Int(v) => {
                    let _ = writeln!(out, " {v}");
                }
                Value::Float(v) => {
                    let _ = writeln!(out, " {}", float(v));
                }
            }
        }
    }
    if format == Format::OpenMetrics {
        out.push_str("# EOF\n");
    }
}

fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{v}")
    }
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn families() -> Vec<Family> {
        vec![
            Family::counter("isopath_port_rx_packets", "Frames received on a port.")
                .with(&[("port", "up0")], 12u64)
                .with(&[("port", "m0")], 0u64),
            Family::gauge("isopath_worker_sleeping", "1 while the worker sleeps.")
                .with(&[("worker", "0"), ("core", "1")], 0u64),
            Family::gauge(
                "isopath_process_cpu_seconds",
                "CPU time.\nBoth user and system.",
            )
            .with(&[], 1.5),
            Family::counter("isopath_empty", "No samples: left out."),
            Family::gauge("isopath_build_info", "Build.").with(
                &[("version", "0.1.0"), ("note", "a \"q\" \\ and\nline")],
                1u64,
            ),
        ]
    }

    #[test]
    fn classic_golden() {
        let mut out = String::new();
        encode(&families(), Format::Classic, &mut out);
        assert_eq!(
            out,
            "# HELP isopath_port_rx_packets_total Frames received on a port.\n\
             # TYPE isopath_port_rx_packets_total counter\n\
             isopath_port_rx_packets_total{port=\"up0\"} 12\n\
             isopath_port_rx_packets_total{port=\"m0\"} 0\n\
             # HELP isopath_worker_sleeping 1 while the worker sleeps.\n\
             # TYPE isopath_worker_sleeping gauge\n\
             isopath_worker_sleeping{worker=\"0\",core=\"1\"} 0\n\
             # HELP isopath_process_cpu_seconds CPU time.\\nBoth user and system.\n\
             # TYPE isopath_process_cpu_seconds gauge\n\
             isopath_process_cpu_seconds 1.5\n\
             # HELP isopath_build_info Build.\n\
             # TYPE isopath_build_info gauge\n\
             isopath_build_info{version=\"0.1.0\",note=\"a \\\"q\\\" \\\\ and\\nline\"} 1\n"
        );
    }

    #[test]
    fn openmetrics_golden() {
        let mut out = String::new();
        encode(&families()[..1], Format::OpenMetrics, &mut out);
        assert_eq!(
            out,
            "# HELP isopath_port_rx_packets Frames received on a port.\n\
             # TYPE isopath_port_rx_packets counter\n\
             isopath_port_rx_packets_total{port=\"up0\"} 12\n\
             isopath_port_rx_packets_total{port=\"m0\"} 0\n\
             # EOF\n"
        );
    }

    #[test]
    fn accept_header_negotiation() {
        assert_eq!(Format::negotiate(None), Format::Classic);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Classic);
        assert_eq!(
            Format::negotiate(Some("text/plain;version=0.0.4;q=0.5,*/*;q=0.1")),
            Format::Classic
        );
        // What Prometheus 2.x sends.
        assert_eq!(
            Format::negotiate(Some(
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                 version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
            )),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0")),
            Format::Classic
        );
    }

    #[test]
    fn counts_stay_exact_past_two_to_the_53() {
        let mut out = String::new();
        let big = (1u64 << 53) + 1;
        encode(
            &[Family::counter("x", "h").with(&[], big)],
            Format::Classic,
            &mut out,
        );
        assert!(out.ends_with(&format!("x_total {big}\n")), "{out}");
    }
}
