//! Records written the ways real contexts hold them: key=value log lines, CSV rows, JSON lines or prose sentences.
//! A task picks one layout and one style of it, so no family is tied to one format.

use serde::Serialize;

/// How records are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// `2026-03-14T06:56:21Z host=api-1 status=error latency_ms=87`
    KeyValue,
    /// A header row, then one delimited row per record.
    Csv,
    /// One JSON object per line.
    JsonLines,
    /// One sentence per record.
    Prose,
}

impl Layout {
    pub const ALL: [Self; 4] = [Self::KeyValue, Self::Csv, Self::JsonLines, Self::Prose];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::KeyValue => "kv",
            Self::Csv => "csv",
            Self::JsonLines => "jsonl",
            Self::Prose => "prose",
        }
    }
}

/// Writes records of fixed fields in one layout and one style of it. Rendering is a pure function of the record and
/// its index, so a record measured once renders the same again.
#[derive(Debug, Clone)]
pub(crate) struct Renderer {
    pub layout: Layout,
    fields: Vec<String>,
    numeric: Vec<bool>,
    style: usize,
}

const KV_STYLES: [(&str, &str); 4] = [(" ", "="), (" | ", "="), (", ", ": "), ("  ", "=")];
const CSV_DELIMITERS: [&str; 3] = [",", ";", "|"];
const PROSE_TIME_LEADS: [&str; 4] = ["At {},", "On {},", "Entry {}:", "{} -"];
const PROSE_ID_LEADS: [&str; 4] = ["Record {}:", "For {},", "Entry {}:", "{} -"];
const PROSE_CLAUSES: [&str; 4] = ["{f} was {v}", "the {f} was {v}", "{f} {v}", "{f} recorded as {v}"];

impl Renderer {
    /// `fields[0]` leads each record (a time or an id); `numeric` marks fields written unquoted in JSON.
    pub fn new(layout: Layout, fields: Vec<String>, numeric: Vec<bool>, rng: &mut fastrand::Rng) -> Self {
        Self { layout, fields, numeric, style: rng.usize(..12) }
    }

    /// What precedes the records: the CSV header, else nothing.
    pub fn header(&self) -> String {
        match self.layout {
            Layout::Csv => format!("{}\n", self.fields.join(CSV_DELIMITERS[self.style % CSV_DELIMITERS.len()])),
            _ => String::new(),
        }
    }

    /// One record (values in field order) as one line, newline included.
    pub fn line(&self, values: &[String], index: usize) -> String {
        let mut out = String::new();
        match self.layout {
            Layout::KeyValue => {
                let (separator, assign) = KV_STYLES[self.style % KV_STYLES.len()];
                let lead = &values[0];
                if self.style.is_multiple_of(2) {
                    out.push_str(lead);
                } else {
                    out.push_str(&format!("[{lead}]"));
                }
                for (name, value) in self.fields.iter().zip(values).skip(1) {
                    out.push_str(separator);
                    out.push_str(&format!("{name}{assign}{value}"));
                }
            }
            Layout::Csv => out.push_str(&values.join(CSV_DELIMITERS[self.style % CSV_DELIMITERS.len()])),
            Layout::JsonLines => {
                let spaced = self.style.is_multiple_of(2);
                out.push('{');
                for (i, ((name, value), numeric)) in self.fields.iter().zip(values).zip(&self.numeric).enumerate() {
                    if i > 0 {
                        out.push_str(if spaced { ", " } else { "," });
                    }
                    let value = if *numeric { value.clone() } else { format!("\"{value}\"") };
                    out.push_str(&format!("\"{name}\":{}{value}", if spaced { " " } else { "" }));
                }
                out.push('}');
            }
            Layout::Prose => {
                // The sentence frame changes from record to record, as prose does, but deterministically.
                // A leading time reads "At 06:56, ..."; a leading id "For E-1042, ...".
                let leads = if values[0].contains(':') { PROSE_TIME_LEADS } else { PROSE_ID_LEADS };
                let lead = leads[(index + self.style) % leads.len()];
                out.push_str(&lead.replace("{}", &values[0]));
                let clauses: Vec<String> = self
                    .fields
                    .iter()
                    .zip(values)
                    .skip(1)
                    .enumerate()
                    .map(|(i, (name, value))| {
                        let frame = PROSE_CLAUSES[(index * 3 + i + self.style) % PROSE_CLAUSES.len()];
                        frame.replace("{f}", &name.replace('_', " ")).replace("{v}", value)
                    })
                    .collect();
                match clauses.split_last() {
                    Some((last, [])) => out.push_str(&format!(" {last}.")),
                    Some((last, rest)) => out.push_str(&format!(" {}, and {last}.", rest.join(", "))),
                    None => out.push('.'),
                }
            }
        }
        out.push('\n');
        out
    }

    /// How a question names a field: as the records spell it, except that prose spells it with spaces.
    pub fn field_name(&self, field: &str) -> String {
        if self.layout == Layout::Prose { field.replace('_', " ") } else { field.to_owned() }
    }
}

/// Rows from `make` until their rendering reaches `size` characters (the header included); never more than `size`
/// unless even one row does not fit.
pub(crate) fn fill_rows<R>(
    size: usize,
    renderer: &Renderer,
    rng: &mut fastrand::Rng,
    mut make: impl FnMut(&mut fastrand::Rng, usize) -> R,
    values: impl Fn(&R) -> Vec<String>,
) -> Vec<R> {
    let mut length = renderer.header().len();
    let mut rows = Vec::new();
    loop {
        let row = make(rng, rows.len());
        let line = renderer.line(&values(&row), rows.len()).len();
        if length + line > size && !rows.is_empty() {
            break;
        }
        length += line;
        rows.push(row);
    }
    rows
}

/// The text of `rows`.
pub(crate) fn render_rows<R>(renderer: &Renderer, rows: &[R], values: impl Fn(&R) -> Vec<String>) -> String {
    let mut text = renderer.header();
    for (index, row) in rows.iter().enumerate() {
        text.push_str(&renderer.line(&values(row), index));
    }
    text
}

/// Days in each month of 2026 (not a leap year).
const MONTH_DAYS: [u64; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
const MONTH_NAMES: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// A time in 2026 given as seconds since its start, in one of several styles.
pub(crate) fn timestamp(seconds: u64, style: usize) -> String {
    let mut day = (seconds / 86_400) % 365;
    let mut month = 0;
    while day >= MONTH_DAYS[month] {
        day -= MONTH_DAYS[month];
        month += 1;
    }
    let (m, d) = (month + 1, day + 1);
    let (hh, mm, ss) = ((seconds / 3600) % 24, (seconds / 60) % 60, seconds % 60);
    match style % 4 {
        0 => format!("2026-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z"),
        1 => format!("2026-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02}"),
        2 => format!("{d:02}/{m:02}/2026 {hh:02}:{mm:02}"),
        _ => format!("{d} {} 2026 {hh:02}:{mm:02}:{ss:02}", MONTH_NAMES[month]),
    }
}

pub(crate) fn pick<'a, T>(rng: &mut fastrand::Rng, items: &'a [T]) -> &'a T {
    &items[rng.usize(..items.len())]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn renderer(layout: Layout, style: usize) -> Renderer {
        Renderer {
            layout,
            fields: vec!["ts".into(), "host".into(), "latency_ms".into()],
            numeric: vec![false, false, true],
            style,
        }
    }

    #[test]
    fn each_layout_writes_all_fields() {
        let values = ["2026-03-14T06:56:21Z".to_owned(), "api-1".to_owned(), "87".to_owned()];
        assert_eq!(renderer(Layout::KeyValue, 0).line(&values, 0), "2026-03-14T06:56:21Z host=api-1 latency_ms=87\n");
        assert_eq!(renderer(Layout::Csv, 0).header(), "ts,host,latency_ms\n");
        assert_eq!(renderer(Layout::Csv, 1).line(&values, 0), "2026-03-14T06:56:21Z;api-1;87\n");
        assert_eq!(
            renderer(Layout::JsonLines, 0).line(&values, 0),
            "{\"ts\": \"2026-03-14T06:56:21Z\", \"host\": \"api-1\", \"latency_ms\": 87}\n"
        );
        let prose = renderer(Layout::Prose, 0).line(&values, 0);
        assert!(prose.contains("api-1") && prose.contains("latency ms") && prose.contains(" 87"), "{prose}");
        assert!(prose.ends_with(".\n"));
    }

    #[test]
    fn timestamps_are_valid_dates() {
        assert_eq!(timestamp(0, 0), "2026-01-01T00:00:00Z");
        assert_eq!(timestamp(31 * 86_400 + 28 * 86_400 + 3661, 1), "2026-03-01 01:01:01");
        assert_eq!(timestamp(364 * 86_400, 2), "31/12/2026 00:00");
        assert_eq!(timestamp(86_400 * 40, 3), "10 Feb 2026 00:00:00");
    }
}
