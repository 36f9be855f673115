//! A strict reader of the Prometheus text exposition format (version 0.0.4), written for the
//! tests so that what `/metrics` serves is checked by something other than the exporter that
//! wrote it, and the checks a histogram must pass to be summed across replicas.

use std::collections::{BTreeMap, HashMap, HashSet};

/// One sample line: `name{labels} value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The metric name (with `_bucket`, `_sum`, `_count` for histograms).
    pub name: String,
    /// Its labels, by name.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// A series of a histogram (its labels without `le`) and its buckets, `(le, count)` in order.
type Buckets = BTreeMap<Vec<(String, String)>, Vec<(f64, f64)>>;

/// A parsed exposition: the declared type of each family and every sample, in order.
#[derive(Debug, Default)]
pub struct Exposition {
    /// `# TYPE` of each family.
    pub types: HashMap<String, String>,
    /// The samples, in the order served.
    pub samples: Vec<Sample>,
}

fn is_name(s: &str, colons: bool) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colons && c == ':'))
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colons && c == ':'))
}

fn value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse().map_err(|_| format!("not a number: {s:?}")),
    }
}

/// Reads `{a="x",b="y"}` from the start of `s`; the labels and the rest.
fn labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = s.strip_prefix('{').ok_or("no label set")?;
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = rest.find('=').ok_or("label without '='")?;
        let name = rest[..eq].trim();
        if !is_name(name, false) {
            return Err(format!("bad label name {name:?}"));
        }
        rest = rest[eq + 1..].strip_prefix('"').ok_or("label value not quoted")?;
        let mut text = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => text.push('\\'),
                    Some((_, '"')) => text.push('"'),
                    Some((_, 'n')) => text.push('\n'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((_, '\n')) => return Err("newline in a label value".into()),
                Some((_, c)) => text.push(c),
            }
        };
        if labels.insert(name.to_owned(), text).is_some() {
            return Err(format!("label {name} twice"));
        }
        rest = rest[end + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

impl Exposition {
    /// Parses `text`; an error names the line that breaks the format.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut out = Self::default();
        let mut seen_samples: HashSet<String> = HashSet::new();
        for (n, line) in text.lines().enumerate() {
            let at = |why: String| format!("line {}: {why}: {line:?}", n + 1);
            if line.trim().is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                let mut words = comment.trim_start().splitn(3, ' ');
                match (words.next(), words.next(), words.next()) {
                    (Some("TYPE"), Some(name), Some(kind)) => {
                        if !is_name(name, true) {
                            return Err(at("bad metric name".into()));
                        }
                        if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                            return Err(at(format!("unknown type {kind:?}")));
                        }
                        if seen_samples.contains(name) {
                            return Err(at("TYPE after the family's samples".into()));
                        }
                        if out.types.insert(name.to_owned(), kind.to_owned()).is_some() {
                            return Err(at("second TYPE for a family".into()));
                        }
                    }
                    (Some("HELP"), Some(name), _) if !is_name(name, true) => {
                        return Err(at("bad metric name".into()));
                    }
                    _ => {}
                }
                continue;
            }
            let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value".into()))?;
            let name = &line[..name_end];
            if !is_name(name, true) {
                return Err(at("bad metric name".into()));
            }
            let (labels, rest) = if line[name_end..].starts_with('{') {
                labels(&line[name_end..]).map_err(at)?
            } else {
                (BTreeMap::new(), &line[name_end..])
            };
            let mut fields = rest.split_whitespace();
            let value = value(fields.next().ok_or_else(|| at("no value".into()))?).map_err(at)?;
            if let Some(timestamp) = fields.next() {
                timestamp
                    .parse::<i64>()
                    .map_err(|_| at(format!("bad timestamp {timestamp:?}")))?;
            }
            if fields.next().is_some() {
                return Err(at("trailing text".into()));
            }
            for family in [name, family_of(name)] {
                seen_samples.insert(family.to_owned());
            }
            out.samples.push(Sample {
                name: name.to_owned(),
                labels,
                value,
            });
        }
        Ok(out)
    }

    /// The samples named `name`.
    pub fn named<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a Sample> + use<'a> {
        let name = name.to_owned();
        self.samples.iter().filter(move |s| s.name == name)
    }

    /// Checks that `family` is a histogram that can be summed across replicas: its `TYPE` is
    /// `histogram`; every series (label set without `le`) has `_bucket` lines with strictly
    /// increasing `le` ending in `+Inf` and non-decreasing counts, a `_sum`, and a `_count`
    /// equal to its `+Inf` bucket. Returns the number of series.
    pub fn check_histogram(&self, family: &str) -> Result<usize, String> {
        match self.types.get(family).map(String::as_str) {
            Some("histogram") => {}
            other => return Err(format!("{family}: TYPE is {other:?}, not histogram")),
        }
        let mut series: Buckets = BTreeMap::new();
        for sample in self.named(&format!("{family}_bucket")) {
            let mut labels = sample.labels.clone();
            let le = labels
                .remove("le")
                .ok_or_else(|| format!("{family}_bucket without le"))?;
            let le = value(&le).map_err(|e| format!("{family}: le: {e}"))?;
            series
                .entry(labels.into_iter().collect())
                .or_default()
                .push((le, sample.value));
        }
        if series.is_empty() {
            return Err(format!("{family}: no _bucket lines"));
        }
        for (labels, buckets) in &series {
            let pairs = buckets.windows(2);
            for pair in pairs {
                if pair[1].0 <= pair[0].0 {
                    return Err(format!("{family}{labels:?}: le not increasing: {buckets:?}"));
                }
                if pair[1].1 < pair[0].1 {
                    return Err(format!("{family}{labels:?}: counts decreasing: {buckets:?}"));
                }
            }
            let last = buckets[buckets.len() - 1];
            if last.0 != f64::INFINITY {
                return Err(format!("{family}{labels:?}: last bucket is not +Inf: {buckets:?}"));
            }
            let same = |s: &&Sample| s.labels.clone().into_iter().collect::<Vec<_>>() == *labels;
            let count = self
                .named(&format!("{family}_count"))
                .find(same)
                .ok_or_else(|| format!("{family}{labels:?}: no _count"))?;
            if count.value != last.1 {
                return Err(format!(
                    "{family}{labels:?}: _count {} is not the +Inf bucket {}",
                    count.value, last.1
                ));
            }
            let sum = self
                .named(&format!("{family}_sum"))
                .find(same)
                .ok_or_else(|| format!("{family}{labels:?}: no _sum"))?;
            if sum.value.is_nan() || sum.value < 0.0 {
                return Err(format!("{family}{labels:?}: _sum {} is not a duration", sum.value));
            }
        }
        Ok(series.len())
    }
}

/// The family a sample belongs to: its name without a histogram's or summary's suffix.
fn family_of(name: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "# HELP t_seconds Time.\n# TYPE t_seconds histogram\n\
        t_seconds_bucket{route=\"/a\",le=\"0.1\"} 1\nt_seconds_bucket{route=\"/a\",le=\"1\"} 2\n\
        t_seconds_bucket{route=\"/a\",le=\"+Inf\"} 3\nt_seconds_sum{route=\"/a\"} 4.5\n\
        t_seconds_count{route=\"/a\"} 3\n# TYPE c_total counter\nc_total{x=\"q\\\"uote\"} 7\n";

    #[test]
    fn reads_a_histogram_and_escapes() {
        let e = Exposition::parse(GOOD).unwrap();
        assert_eq!(e.check_histogram("t_seconds"), Ok(1));
        assert_eq!(e.named("c_total").next().unwrap().labels["x"], "q\"uote");
    }

    #[test]
    fn refuses_what_cannot_be_summed_or_read() {
        let broken = [
            GOOD.replace("t_seconds_count{route=\"/a\"} 3", "t_seconds_count{route=\"/a\"} 2"),
            GOOD.replace("le=\"+Inf\"", "le=\"5\""),
            GOOD.replace("le=\"1\"} 2", "le=\"0.05\"} 2"),
            GOOD.replace("histogram", "summary"),
        ];
        let e = Exposition::parse(&broken[0]).unwrap();
        assert!(e.check_histogram("t_seconds").unwrap_err().contains("_count"));
        let e = Exposition::parse(&broken[1]).unwrap();
        assert!(e.check_histogram("t_seconds").unwrap_err().contains("+Inf"));
        let e = Exposition::parse(&broken[2]).unwrap();
        assert!(e.check_histogram("t_seconds").unwrap_err().contains("increasing"));
        let e = Exposition::parse(&broken[3]).unwrap();
        assert!(e.check_histogram("t_seconds").unwrap_err().contains("not histogram"));
        for bad in ["x{a=\"1} 2", "x 1 2 3", "9x 1", "x{a=1} 2", "x abc", "# TYPE x widget"] {
            assert!(Exposition::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
