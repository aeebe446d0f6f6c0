//! Results: each run is a [`Report`], a list of named figures plus the correctness problems found,
//! printed as a table for people and as one JSON line for scripts (`{"scenario":…,"target":…,…}`;
//! only those lines start with `{`; a daemon run of `hold` or `fanout` also says its
//! `"transport"`). With `--compare`, [`comparison`] prints the ratio daemon/Redis of every
//! figure both runs measured (with `fanout --transport ws`, WebSocket/TCP).

use std::fmt::Write as _;
use std::time::Duration;

use crate::cli::Transport;
use crate::stats::Summary;

/// One figure's value, with its unit.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    /// A count.
    Count(u64),
    /// A duration shown (and written to JSON) in seconds.
    Secs(Duration),
    /// A duration shown (and written to JSON) in milliseconds.
    Millis(Duration),
    /// A duration shown (and written to JSON) in microseconds.
    Micros(Duration),
    /// Events per second.
    Rate(f64),
    /// A ratio with no unit (e.g. marks per sync).
    Ratio(f64),
    /// Bytes.
    Bytes(u64),
    /// A change in percent (e.g. RSS growth), shown with its sign. Never put in a ratio: a ratio
    /// of two growths means nothing (and one of them is often 0).
    Percent(f64),
    /// Text (a mode, a name).
    Text(&'static str),
    /// Not measured in this run (e.g. RSS of a daemon the bench did not start).
    Missing,
}

impl Value {
    /// `Bytes` if known, else `Missing`.
    pub(crate) fn bytes(bytes: Option<u64>) -> Self {
        bytes.map_or(Self::Missing, Self::Bytes)
    }

    fn number(&self) -> Option<f64> {
        match *self {
            Self::Count(n) | Self::Bytes(n) => Some(n as f64),
            Self::Secs(d) | Self::Millis(d) | Self::Micros(d) => Some(d.as_secs_f64()),
            Self::Rate(r) | Self::Ratio(r) => Some(r),
            Self::Percent(_) | Self::Text(_) | Self::Missing => None,
        }
    }

    fn json(&self) -> String {
        let number = |x: f64| {
            serde_json::Number::from_f64((x * 1000.0).round() / 1000.0)
                .map_or_else(|| "null".to_owned(), |n| n.to_string())
        };
        match self {
            Self::Count(n) | Self::Bytes(n) => n.to_string(),
            Self::Secs(d) => number(d.as_secs_f64()),
            Self::Millis(d) => number(d.as_secs_f64() * 1e3),
            Self::Micros(d) => number(d.as_secs_f64() * 1e6),
            Self::Rate(r) | Self::Ratio(r) | Self::Percent(r) => number(*r),
            Self::Text(t) => serde_json::Value::from(*t).to_string(),
            Self::Missing => "null".to_owned(),
        }
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Count(n) => write!(f, "{n}"),
            Self::Secs(d) => write!(f, "{:.3} s", d.as_secs_f64()),
            Self::Millis(d) => write!(f, "{:.3} ms", d.as_secs_f64() * 1e3),
            Self::Micros(d) => write!(f, "{:.2} µs", d.as_secs_f64() * 1e6),
            Self::Rate(r) if *r >= 100.0 => write!(f, "{r:.0} /s"),
            Self::Rate(r) => write!(f, "{r:.2} /s"),
            Self::Ratio(r) => write!(f, "{r:.2}"),
            Self::Percent(p) => write!(f, "{p:+.2} %"),
            Self::Bytes(b) if *b < 1024 => write!(f, "{b} B"),
            Self::Bytes(b) if *b < 1024 * 1024 => write!(f, "{:.2} KiB", *b as f64 / 1024.0),
            Self::Bytes(b) => write!(f, "{:.1} MiB", *b as f64 / (1024.0 * 1024.0)),
            Self::Text(t) => f.write_str(t),
            Self::Missing => f.write_str("-"),
        }
    }
}

/// One named figure of a run.
#[derive(Debug, Clone)]
struct Metric {
    key: &'static str,
    label: &'static str,
    value: Value,
    compared: bool,
}

/// The result of one scenario against one target.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    scenario: &'static str,
    target: &'static str,
    /// How the daemon's clients connected, where the scenario lets one choose.
    transport: Option<Transport>,
    /// Daemons the clients were spread over.
    nodes: usize,
    detail: String,
    metrics: Vec<Metric>,
    problems: Vec<String>,
}

impl Report {
    /// An empty report; `detail` is shown in the table's title (address, pid).
    pub(crate) fn new(scenario: &'static str, target: &'static str, detail: String) -> Self {
        Self {
            scenario,
            target,
            transport: None,
            nodes: 1,
            detail,
            metrics: Vec::new(),
            problems: Vec::new(),
        }
    }

    /// Records how the daemon's clients connected (shown in the title, the comparison's
    /// columns and the JSON line).
    pub(crate) fn transport(&mut self, transport: Transport) {
        self.transport = Some(transport);
    }

    /// The run spread its clients over `nodes` daemons (shown in its name when above 1).
    pub(crate) fn nodes(&mut self, nodes: usize) {
        self.nodes = nodes;
    }

    /// Adds a figure that describes the run (sizes, counts) and is not compared.
    pub(crate) fn info(&mut self, key: &'static str, label: &'static str, value: Value) {
        self.push(key, label, value, false);
    }

    /// Adds a figure that `--compare` puts side by side with the other target's.
    pub(crate) fn figure(&mut self, key: &'static str, label: &'static str, value: Value) {
        self.push(key, label, value, true);
    }

    fn push(&mut self, key: &'static str, label: &'static str, value: Value, compared: bool) {
        self.metrics.push(Metric {
            key,
            label,
            value,
            compared,
        });
    }

    /// Adds p50, p99 and max of `summary` as compared figures in milliseconds, under `keys` and
    /// `labels` (in that order).
    pub(crate) fn latency(
        &mut self,
        keys: [&'static str; 3],
        labels: [&'static str; 3],
        summary: Option<Summary>,
    ) {
        let values = summary.map_or([Value::Missing, Value::Missing, Value::Missing], |s| {
            [
                Value::Millis(s.p50),
                Value::Millis(s.p99),
                Value::Millis(s.max),
            ]
        });
        for ((key, label), value) in keys.into_iter().zip(labels).zip(values) {
            self.figure(key, label, value);
        }
    }

    /// Records a correctness problem (lost deliveries, failed clients, CSV mismatch, timeout).
    pub(crate) fn problem(&mut self, problem: String) {
        self.problems.push(problem);
    }

    /// What the run was against (`attendanced`, `redis`), with the transport if one was chosen
    /// (`attendanced ws`).
    pub(crate) fn target(&self) -> String {
        let name = match self.transport {
            Some(t) => format!("{} {}", self.target, t.name()),
            None => self.target.to_owned(),
        };
        if self.nodes > 1 {
            format!("{name} ×{}", self.nodes)
        } else {
            name
        }
    }

    /// Whether the run found no problem.
    pub(crate) fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// The table for people.
    pub(crate) fn table(&self) -> String {
        let width = self.label_width();
        let mut out = format!("{} — {} ({})\n", self.scenario, self.target(), self.detail);
        for m in &self.metrics {
            let _ = writeln!(out, "  {:width$}  {}", m.label, m.value);
        }
        for p in &self.problems {
            let _ = writeln!(out, "  PROBLEM: {p}");
        }
        out
    }

    /// The JSON line for scripts.
    pub(crate) fn json(&self) -> String {
        let text = |s: &str| serde_json::Value::from(s).to_string();
        let mut out = format!(
            "{{\"scenario\":{},\"target\":{}",
            text(self.scenario),
            text(self.target)
        );
        if let Some(t) = self.transport {
            let _ = write!(out, ",\"transport\":{}", text(t.name()));
        }
        if self.nodes > 1 {
            let _ = write!(out, ",\"nodes\":{}", self.nodes);
        }
        let _ = write!(out, ",\"ok\":{}", self.ok());
        for m in &self.metrics {
            let _ = write!(out, ",{}:{}", text(m.key), m.value.json());
        }
        let problems =
            serde_json::Value::from(self.problems.iter().map(String::as_str).collect::<Vec<_>>());
        let _ = write!(out, ",\"problems\":{problems}}}");
        out
    }

    fn label_width(&self) -> usize {
        self.metrics
            .iter()
            .map(|m| m.label.chars().count())
            .max()
            .unwrap_or(0)
    }
}

/// The side-by-side table of two runs of one scenario: every compared figure both measured, and
/// the ratio `a / b`.
pub(crate) fn comparison(a: &Report, b: &Report) -> String {
    let width = a.label_width().max(6);
    let (ta, tb) = (a.target(), b.target());
    // Columns as wide as the longer name (`attendanced tcp ×3`), at least 16.
    let col = [&ta, &tb]
        .iter()
        .map(|t| t.chars().count())
        .fold(16, usize::max);
    let mut out = format!(
        "{} — {ta} / {tb}\n  {:width$}  {:>col$}  {:>col$}  {:>8}\n",
        a.scenario, "figure", ta, tb, "ratio"
    );
    for m in a.metrics.iter().filter(|m| m.compared) {
        let Some(other) = b.metrics.iter().find(|o| o.key == m.key) else {
            continue;
        };
        let ratio = match (m.value.number(), other.value.number()) {
            (Some(x), Some(y)) if y != 0.0 => format_ratio(x / y),
            _ => "-".to_owned(),
        };
        let _ = writeln!(
            out,
            "  {:width$}  {:>col$}  {:>col$}  {:>8}",
            m.label,
            m.value.to_string(),
            other.value.to_string(),
            ratio
        );
    }
    out
}

/// Every compared figure both runs measured, as (key, label, ratio `a / b`).
pub(crate) fn ratios(a: &Report, b: &Report) -> Vec<(&'static str, &'static str, f64)> {
    a.metrics
        .iter()
        .filter(|m| m.compared)
        .filter_map(|m| {
            let other = b.metrics.iter().find(|o| o.key == m.key)?;
            match (m.value.number(), other.value.number()) {
                (Some(x), Some(y)) if y != 0.0 => Some((m.key, m.label, x / y)),
                _ => None,
            }
        })
        .collect()
}

/// The ratios of several rounds of the same comparison: per figure the median, the lowest and
/// the highest, as a table and a JSON line. On a shared, noisy machine one round can be off by
/// ±15 %; the median of alternating rounds is the figure to quote.
pub(crate) fn ratio_summary(
    scenario: &str,
    targets: (&str, &str),
    rounds: &[Vec<(&'static str, &'static str, f64)>],
) -> String {
    let mut keys: Vec<(&'static str, &'static str)> = Vec::new();
    for (key, label, _) in rounds.iter().flatten() {
        if !keys.iter().any(|(k, _)| k == key) {
            keys.push((key, label));
        }
    }
    let width = keys.iter().map(|(_, l)| l.len()).max().unwrap_or(6).max(6);
    let mut out = format!(
        "{scenario} — {} / {} over {} alternating rounds\n  {:width$}  {:>8}  {:>8}  {:>8}\n",
        targets.0,
        targets.1,
        rounds.len(),
        "figure",
        "median",
        "lowest",
        "highest"
    );
    let mut json = format!(
        "{{\"scenario\":{},\"summary\":\"ratios\",\"of\":{},\"rounds\":{}",
        serde_json::Value::from(scenario),
        serde_json::Value::from(format!("{} / {}", targets.0, targets.1)),
        rounds.len()
    );
    for (key, label) in keys {
        let mut values: Vec<f64> = rounds
            .iter()
            .flatten()
            .filter(|(k, _, _)| *k == key)
            .map(|(_, _, r)| *r)
            .collect();
        values.sort_by(f64::total_cmp);
        let (Some(low), Some(high)) = (values.first(), values.last()) else {
            continue;
        };
        let median = median(&values);
        let _ = writeln!(
            out,
            "  {label:width$}  {:>8}  {:>8}  {:>8}",
            format_ratio(median),
            format_ratio(*low),
            format_ratio(*high)
        );
        let _ = write!(
            json,
            ",\"{key}_ratio_median\":{}",
            Value::Ratio(median).json()
        );
    }
    json.push('}');
    out.push('\n');
    out.push_str(&json);
    out
}

/// The median of sorted `values` (the mean of the middle two for an even count).
fn median(values: &[f64]) -> f64 {
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Two decimals, or enough to tell a small ratio from zero.
fn format_ratio(r: f64) -> String {
    match r.abs() {
        a if a == 0.0 || a >= 0.1 => format!("{r:.2}"),
        a if a >= 0.01 => format!("{r:.3}"),
        _ => format!("{r:.1e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_takes_the_median_of_the_rounds_ratios() {
        let rounds: Vec<_> = [(1.0, 2.0), (3.0, 2.0), (2.0, 2.0)]
            .iter()
            .map(|&(a, b)| ratios(&sample("attendanced", a), &sample("redis", b)))
            .collect();
        let text = ratio_summary("hold", ("attendanced", "redis"), &rounds);
        assert!(text.contains("over 3 alternating rounds"), "{text}");
        // Rates 1/2, 3/2 and 2/2: median 1.00, lowest 0.50, highest 1.50.
        let row = text
            .lines()
            .find(|l| l.contains("connects+joins per second"))
            .unwrap_or_default();
        assert!(
            row.contains("1.00") && row.contains("0.50") && row.contains("1.50"),
            "{row}"
        );
        assert!(text.contains("\"rate_per_s_ratio_median\":1.0"), "{text}");
        assert!(text.contains("\"of\":\"attendanced / redis\""), "{text}");
        assert_eq!(median(&[1.0, 2.0, 3.0, 4.0]), 2.5);
    }

    fn sample(target: &'static str, rate: f64) -> Report {
        let mut r = Report::new("hold", target, "127.0.0.1:1".into());
        r.info("clients", "clients requested", Value::Count(10));
        r.figure("rate_per_s", "connects+joins per second", Value::Rate(rate));
        r.figure(
            "rss_per_conn_bytes",
            "RSS per held connection",
            Value::Bytes(2048),
        );
        r.figure(
            "establish_s",
            "time to establish",
            Value::Secs(Duration::from_millis(1500)),
        );
        r
    }

    #[test]
    fn the_json_line_starts_with_scenario_and_target_and_parses() -> Result<(), serde_json::Error> {
        let mut r = sample("attendanced", 1234.5);
        r.figure("missing", "not measured", Value::Missing);
        let line = r.json();
        assert!(line.starts_with("{\"scenario\":\"hold\",\"target\":\"attendanced\",\"ok\":true"));
        let v: serde_json::Value = serde_json::from_str(&line)?;
        assert_eq!(v["clients"], 10);
        assert_eq!(v["rate_per_s"], 1234.5);
        assert_eq!(v["establish_s"], 1.5);
        assert!(v["missing"].is_null());
        assert_eq!(v["problems"], serde_json::json!([]));
        Ok(())
    }

    #[test]
    fn a_chosen_transport_is_named_in_the_json_the_title_and_the_comparison()
    -> Result<(), serde_json::Error> {
        let mut ws = sample("attendanced", 900.0);
        ws.transport(Transport::Ws);
        let mut tcp = sample("attendanced", 1000.0);
        tcp.transport(Transport::Tcp);
        let line = ws.json();
        assert!(
            line.starts_with(
                "{\"scenario\":\"hold\",\"target\":\"attendanced\",\"transport\":\"ws\",\"ok\":true"
            ),
            "{line}"
        );
        let v: serde_json::Value = serde_json::from_str(&line)?;
        assert_eq!(v["transport"], "ws");
        assert!(
            ws.table().starts_with("hold — attendanced ws ("),
            "{}",
            ws.table()
        );
        let text = comparison(&ws, &tcp);
        assert!(
            text.starts_with("hold — attendanced ws / attendanced tcp\n"),
            "{text}"
        );
        let row = text
            .lines()
            .find(|l| l.contains("connects+joins per second"))
            .unwrap_or_default();
        assert!(row.trim_end().ends_with("0.90"), "{row}");
        // Without a transport the line is as it always was.
        let plain = sample("redis", 1.0).json();
        assert!(plain.starts_with("{\"scenario\":\"hold\",\"target\":\"redis\",\"ok\":true"));
        Ok(())
    }

    #[test]
    fn problems_make_a_run_not_ok() -> Result<(), serde_json::Error> {
        let mut r = sample("attendanced", 1.0);
        r.problem("3 deliveries \"lost\"".into());
        assert!(!r.ok());
        assert!(r.table().contains("PROBLEM: 3 deliveries"));
        let v: serde_json::Value = serde_json::from_str(&r.json())?;
        assert_eq!(v["ok"], false);
        assert_eq!(v["problems"][0], "3 deliveries \"lost\"");
        Ok(())
    }

    #[test]
    fn the_comparison_shows_ratios_of_compared_figures_only() {
        let text = comparison(&sample("attendanced", 2000.0), &sample("redis", 1000.0));
        assert!(text.contains("connects+joins per second"));
        assert!(text.contains("2.00"));
        assert!(!text.contains("clients requested"));
    }

    #[test]
    fn percentages_are_never_put_in_a_ratio() {
        let growth = |pct| {
            let mut r = Report::new("hold", "x", String::new());
            r.figure("rss_growth_pct", "RSS growth", Value::Percent(pct));
            r
        };
        let text = comparison(&growth(4.0), &growth(2.0));
        let row = text
            .lines()
            .find(|l| l.contains("RSS growth"))
            .unwrap_or("");
        assert!(row.trim_end().ends_with('-'), "{text}");
    }

    #[test]
    fn small_ratios_do_not_round_to_zero() {
        assert_eq!(format_ratio(0.002), "2.0e-3");
        assert_eq!(format_ratio(0.093), "0.093");
        assert_eq!(format_ratio(1.234), "1.23");
        assert_eq!(format_ratio(0.0), "0.00");
    }

    #[test]
    fn values_format_with_units() {
        assert_eq!(Value::Bytes(2048).to_string(), "2.00 KiB");
        assert_eq!(Value::Bytes(300).to_string(), "300 B");
        assert_eq!(
            Value::Millis(Duration::from_micros(1500)).to_string(),
            "1.500 ms"
        );
        assert_eq!(Value::Rate(9000.4).to_string(), "9000 /s");
        assert_eq!(Value::Percent(0.0312).to_string(), "+0.03 %");
        assert_eq!(Value::Percent(-2.5).to_string(), "-2.50 %");
        assert_eq!(Value::Percent(1.23456).json(), "1.235");
    }
}
