//! OOLONG-synth style aggregation: every record counts. Records of one of several domains (server logs, orders,
//! support tickets, sensor readings, library loans) with categorical fields and one number, written in one layout;
//! the question asks for a count, a sum, the most common value or a comparison, computed from the records written.

use crate::records::{self, Layout, Renderer, pick};
use crate::{Expected, Generated};

struct Category {
    names: &'static [&'static str],
    values: &'static [&'static str],
}

struct Domain {
    name: &'static str,
    nouns: &'static [&'static str],
    time_names: &'static [&'static str],
    id_names: &'static [&'static str],
    id_prefix: &'static str,
    categories: [Category; 3],
    number_names: &'static [&'static str],
    number_range: (u32, u32),
}

const DOMAINS: [Domain; 5] = [
    Domain {
        name: "logs",
        nouns: &["log lines", "log entries", "events"],
        time_names: &["ts", "time", "timestamp"],
        id_names: &["user", "uid", "account"],
        id_prefix: "u",
        categories: [
            Category {
                names: &["host", "server", "node"],
                values: &["api-1", "api-2", "web-1", "web-2", "db-1", "worker-3"],
            },
            Category {
                names: &["action", "op", "event"],
                values: &["login", "logout", "search", "upload", "download", "delete", "update"],
            },
            Category { names: &["status", "result", "outcome"], values: &["ok", "error", "timeout", "denied"] },
        ],
        number_names: &["latency_ms", "duration_ms", "took_ms"],
        number_range: (3, 2000),
    },
    Domain {
        name: "orders",
        nouns: &["orders", "order records", "sales"],
        time_names: &["date", "ordered_at", "placed"],
        id_names: &["order_id", "order", "ref"],
        id_prefix: "ord",
        categories: [
            Category {
                names: &["region", "area", "territory"],
                values: &["north", "south", "east", "west", "central"],
            },
            Category {
                names: &["product", "item", "sku_name"],
                values: &["lamp", "chair", "desk", "shelf", "rug", "mirror", "clock"],
            },
            Category { names: &["channel", "source", "sold_via"], values: &["online", "store", "phone", "partner"] },
        ],
        number_names: &["amount", "total_usd", "price"],
        number_range: (5, 900),
    },
    Domain {
        name: "tickets",
        nouns: &["tickets", "support tickets", "cases"],
        time_names: &["opened", "created", "created_at"],
        id_names: &["ticket", "ticket_id", "case"],
        id_prefix: "t",
        categories: [
            Category {
                names: &["team", "queue", "assignee_team"],
                values: &["billing", "platform", "mobile", "identity", "payments"],
            },
            Category { names: &["priority", "severity", "urgency"], values: &["p1", "p2", "p3", "p4"] },
            Category {
                names: &["category", "kind", "type"],
                values: &["bug", "outage", "question", "feature", "access"],
            },
        ],
        number_names: &["minutes_open", "age_min", "wait_minutes"],
        number_range: (1, 600),
    },
    Domain {
        name: "sensors",
        nouns: &["readings", "measurements", "samples"],
        time_names: &["at", "sampled", "time"],
        id_names: &["device", "sensor_id", "probe"],
        id_prefix: "d",
        categories: [
            Category { names: &["site", "location", "station"], values: &["alpha", "bravo", "delta", "echo", "kilo"] },
            Category { names: &["metric", "quantity", "channel"], values: &["temp", "humidity", "pressure", "co2"] },
            Category { names: &["level", "alert", "state"], values: &["normal", "warning", "critical"] },
        ],
        number_names: &["value", "reading", "raw"],
        number_range: (0, 500),
    },
    Domain {
        name: "loans",
        nouns: &["loans", "loan records", "checkouts"],
        time_names: &["borrowed", "date", "checked_out"],
        id_names: &["member", "card", "patron"],
        id_prefix: "m",
        categories: [
            Category {
                names: &["branch", "library", "site"],
                values: &["central", "riverside", "hillcrest", "oakwood"],
            },
            Category {
                names: &["genre", "section", "shelf"],
                values: &["mystery", "history", "poetry", "science", "travel", "cookery"],
            },
            Category { names: &["returned", "return_status", "return"], values: &["on_time", "late", "lost"] },
        ],
        number_names: &["days", "days_out", "loan_days"],
        number_range: (1, 60),
    },
];

/// The kinds of question, rotated over the tasks of a size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Question {
    CountTwo,
    Sum,
    MostCommon,
    CountOne,
    Compare,
    LargestTotal,
}

impl Question {
    const ALL: [Self; 6] =
        [Self::CountTwo, Self::Sum, Self::MostCommon, Self::CountOne, Self::Compare, Self::LargestTotal];

    fn as_str(self) -> &'static str {
        match self {
            Self::CountTwo => "count2",
            Self::Sum => "sum",
            Self::MostCommon => "most_common",
            Self::CountOne => "count1",
            Self::Compare => "compare",
            Self::LargestTotal => "largest_total",
        }
    }
}

#[derive(Debug, Clone)]
struct Row {
    time: String,
    id: String,
    /// An index into each category's values.
    categories: [usize; 3],
    number: u32,
}

/// One task of about `size` characters.
pub(crate) fn generate(size: usize, index: usize, rng: &mut fastrand::Rng) -> Generated {
    let domain = pick(rng, &DOMAINS);
    let layout = Layout::ALL[(index + rng.usize(..4)) % Layout::ALL.len()];
    let category_names: Vec<&str> = domain.categories.iter().map(|c| *pick(rng, c.names)).collect();
    let number_name = *pick(rng, domain.number_names);
    let time_name = *pick(rng, domain.time_names);
    let id_name = *pick(rng, domain.id_names);
    // Field order varies (the time leads); skewed value frequencies give most-common questions a clear winner.
    let mut order: Vec<usize> = (0..5).collect();
    rng.shuffle(&mut order);
    let names_by_slot = |slot: usize| -> (String, bool) {
        match slot {
            0 => (id_name.to_owned(), false),
            1..=3 => (category_names[slot - 1].to_owned(), false),
            _ => (number_name.to_owned(), true),
        }
    };
    let mut fields = vec![time_name.to_owned()];
    let mut numeric = vec![false];
    for &slot in &order {
        let (name, is_number) = names_by_slot(slot);
        fields.push(name);
        numeric.push(is_number);
    }
    let renderer = Renderer::new(layout, fields, numeric, rng);
    let weights: Vec<Vec<f64>> =
        domain.categories.iter().map(|c| c.values.iter().map(|_| rng.f64().powi(2) + 0.05).collect()).collect();
    let time_style = rng.usize(..4);
    let mut clock = rng.u64(..300 * 86_400);
    let ids: u32 = rng.u32(1000..9000);
    let values = |row: &Row| -> Vec<String> {
        let mut out = vec![row.time.clone()];
        for &slot in &order {
            out.push(match slot {
                0 => row.id.clone(),
                1..=3 => domain.categories[slot - 1].values[row.categories[slot - 1]].to_owned(),
                _ => row.number.to_string(),
            });
        }
        out
    };
    let rows = records::fill_rows(
        size,
        &renderer,
        rng,
        |rng, _| {
            clock += rng.u64(1..240);
            let mut categories = [0; 3];
            for (c, slot) in categories.iter_mut().enumerate() {
                *slot = weighted(rng, &weights[c]);
            }
            Row {
                time: records::timestamp(clock, time_style),
                id: format!("{}{}", domain.id_prefix, ids + rng.u32(..400)),
                categories,
                number: rng.u32(domain.number_range.0..=domain.number_range.1),
            }
        },
        values,
    );
    let context = records::render_rows(&renderer, &rows, values);
    let noun = *pick(rng, domain.nouns);
    let start = index + rng.usize(..Question::ALL.len());
    let (query, expected, kind) = (0..Question::ALL.len())
        .map(|offset| Question::ALL[(start + offset) % Question::ALL.len()])
        .find_map(|question| ask(question, domain, &category_names, number_name, noun, &renderer, &rows, rng))
        .unwrap_or_else(|| count_one(domain, &category_names, noun, &renderer, &rows, rng));
    Generated { context, query, expected, variant: format!("{}/{}/{}", domain.name, layout.as_str(), kind.as_str()) }
}

fn weighted(rng: &mut fastrand::Rng, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut point = rng.f64() * total;
    for (i, w) in weights.iter().enumerate() {
        if point < *w {
            return i;
        }
        point -= w;
    }
    weights.len() - 1
}

/// How a question states `field` has `value`; key=value contexts invite `field=value`.
fn condition(renderer: &Renderer, field: &str, value: &str, style: usize) -> String {
    let field = renderer.field_name(field);
    match (renderer.layout, style % 3) {
        (Layout::KeyValue, 0) | (Layout::Csv | Layout::JsonLines, 1) => format!("{field}={value}"),
        (_, 2) => format!("{field} \"{value}\""),
        _ => format!("{field} {value}"),
    }
}

const NUMBER_FORMAT: [&str; 3] =
    ["Answer with a single number.", "Reply with just the number.", "Give only the count."];

/// The question of `kind` over `rows`, or None when the records give it no unique answer (a tie).
#[allow(clippy::too_many_arguments)]
fn ask(
    kind: Question,
    domain: &Domain,
    names: &[&str],
    number_name: &str,
    noun: &str,
    renderer: &Renderer,
    rows: &[Row],
    rng: &mut fastrand::Rng,
) -> Option<(String, Expected, Question)> {
    let style = rng.usize(..3);
    let sample = &rows[rng.usize(..rows.len())];
    let a = rng.usize(..3);
    let b = (a + 1 + rng.usize(..2)) % 3;
    let value_of = |c: usize, row: &Row| domain.categories[c].values[row.categories[c]];
    match kind {
        Question::CountTwo => {
            let count = rows
                .iter()
                .filter(|r| r.categories[a] == sample.categories[a] && r.categories[b] == sample.categories[b])
                .count();
            let (ca, cb) = (
                condition(renderer, names[a], value_of(a, sample), style),
                condition(renderer, names[b], value_of(b, sample), style),
            );
            let question = match style {
                0 => format!("How many {noun} have {ca} and {cb}?"),
                1 => format!("Count the {noun} where {ca} and {cb}."),
                _ => format!("What is the number of {noun} with both {ca} and {cb}?"),
            };
            Some((format!("{question} {}", NUMBER_FORMAT[style]), Expected::Number { value: count as i64 }, kind))
        }
        Question::Sum => {
            let total: u64 =
                rows.iter().filter(|r| r.categories[a] == sample.categories[a]).map(|r| u64::from(r.number)).sum();
            let ca = condition(renderer, names[a], value_of(a, sample), style);
            let field = renderer.field_name(number_name);
            let question = match style {
                0 => format!("What is the total {field} of the {noun} with {ca}?"),
                1 => format!("Add up the {field} values over all {noun} where {ca}. What is the sum?"),
                _ => format!("Summing {field} across every one of the {noun} that have {ca}, what do you get?"),
            };
            Some((
                format!("{question} Answer with a single number."),
                Expected::Number { value: i64::try_from(total).unwrap_or(i64::MAX) },
                kind,
            ))
        }
        Question::MostCommon => {
            let mut counts = vec![0usize; domain.categories[a].values.len()];
            for row in rows.iter().filter(|r| r.categories[b] == sample.categories[b]) {
                counts[row.categories[a]] += 1;
            }
            let winner = unique_max(&counts)?;
            let cb = condition(renderer, names[b], value_of(b, sample), style);
            let field = renderer.field_name(names[a]);
            let question = match style {
                0 => format!("Among the {noun} with {cb}, which {field} appears most often?"),
                1 => format!("Which {field} value is the most common among {noun} where {cb}?"),
                _ => format!("Considering only {noun} that have {cb}, what is the most frequent {field}?"),
            };
            Some((
                format!("{question} Answer with the {field} value only."),
                Expected::Label {
                    answer: domain.categories[a].values[winner].to_owned(),
                    candidates: domain.categories[a].values.iter().map(|v| (*v).to_owned()).collect(),
                },
                kind,
            ))
        }
        Question::CountOne => Some(count_one_with(domain, names, noun, renderer, rows, a, sample, style)),
        Question::LargestTotal => {
            let mut totals = vec![0u64; domain.categories[a].values.len()];
            for row in rows {
                totals[row.categories[a]] += u64::from(row.number);
            }
            let winner = unique_max(&totals)?;
            let (field, number) = (renderer.field_name(names[a]), renderer.field_name(number_name));
            let question = match style {
                0 => format!("Which {field} has the largest total {number} over all {noun}?"),
                1 => format!("Summing {number} per {field} across the {noun}, which {field} comes out highest?"),
                _ => format!(
                    "Over every one of the {noun}, which value of {field} accounts for the most {number} in total?"
                ),
            };
            Some((
                format!("{question} Answer with the {field} value only."),
                Expected::Label {
                    answer: domain.categories[a].values[winner].to_owned(),
                    candidates: domain.categories[a].values.iter().map(|v| (*v).to_owned()).collect(),
                },
                kind,
            ))
        }
        Question::Compare => {
            let values = domain.categories[a].values;
            let first = sample.categories[a];
            let second = (first + 1 + rng.usize(..values.len() - 1)) % values.len();
            let count = |v: usize| rows.iter().filter(|r| r.categories[a] == v).count();
            let (n1, n2) = (count(first), count(second));
            if n1 == n2 {
                return None;
            }
            let (v1, v2) = (values[first], values[second]);
            let (c1, c2) = (condition(renderer, names[a], v1, style), condition(renderer, names[a], v2, style));
            let question = match style {
                0 => format!("Are there more {noun} with {c1} or with {c2}? Answer with just {v1} or {v2}."),
                1 => format!(
                    "Which is more frequent among the {noun}: {c1} or {c2}? Reply with only the value, {v1} or {v2}."
                ),
                _ => format!(
                    "Comparing {noun} with {c1} against those with {c2}, which value occurs more often? Answer {v1} or {v2}, nothing else."
                ),
            };
            let winner = if n1 > n2 { v1 } else { v2 };
            Some((
                question,
                Expected::Label { answer: winner.to_owned(), candidates: vec![v1.to_owned(), v2.to_owned()] },
                kind,
            ))
        }
    }
}

fn count_one(
    domain: &Domain,
    names: &[&str],
    noun: &str,
    renderer: &Renderer,
    rows: &[Row],
    rng: &mut fastrand::Rng,
) -> (String, Expected, Question) {
    let sample = &rows[rng.usize(..rows.len())];
    count_one_with(domain, names, noun, renderer, rows, rng.usize(..3), sample, rng.usize(..3))
}

#[allow(clippy::too_many_arguments)]
fn count_one_with(
    domain: &Domain,
    names: &[&str],
    noun: &str,
    renderer: &Renderer,
    rows: &[Row],
    a: usize,
    sample: &Row,
    style: usize,
) -> (String, Expected, Question) {
    let count = rows.iter().filter(|r| r.categories[a] == sample.categories[a]).count();
    let ca = condition(renderer, names[a], domain.categories[a].values[sample.categories[a]], style);
    let question = match style {
        0 => format!("How many {noun} have {ca}?"),
        1 => format!("Count the {noun} with {ca}."),
        _ => format!("In how many of the {noun} is the {ca}?"),
    };
    (format!("{question} {}", NUMBER_FORMAT[style]), Expected::Number { value: count as i64 }, Question::CountOne)
}

fn unique_max<T: Ord + Copy + Default>(counts: &[T]) -> Option<usize> {
    let max = *counts.iter().max()?;
    let mut winners = counts.iter().enumerate().filter(|(_, c)| **c == max);
    let (winner, _) = winners.next()?;
    (max > T::default() && winners.next().is_none()).then_some(winner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Family, generate as generate_tasks};

    /// Whether one line of a context (any layout but CSV) gives `field` the value `value`.
    fn line_has(line: &str, field: &str, value: &str) -> bool {
        [
            format!("{field}={value}"),
            format!("{field}: {value}"),
            format!("\"{field}\": \"{value}\""),
            format!("\"{field}\":\"{value}\""),
        ]
        .iter()
        .any(|pattern| crate::score::contains_term(line, pattern))
    }

    /// The records of a CSV context as field name to value.
    fn csv_records(context: &str) -> Vec<Vec<(String, String)>> {
        let mut lines = context.lines();
        let header = lines.next().unwrap_or_default();
        let delimiter = [',', ';', '|'].into_iter().find(|d| header.contains(*d)).unwrap();
        let names: Vec<&str> = header.split(delimiter).collect();
        lines
            .map(|l| names.iter().zip(l.split(delimiter)).map(|(n, v)| ((*n).to_owned(), v.to_owned())).collect())
            .collect()
    }

    #[test]
    fn generation_is_deterministic_and_sized() {
        let a = generate_tasks(Family::Aggregate, &[8_000, 32_000], 5, 3);
        let b = generate_tasks(Family::Aggregate, &[8_000, 32_000], 5, 3);
        let c = generate_tasks(Family::Aggregate, &[8_000, 32_000], 5, 4);
        assert_eq!(a.len(), 10);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!((&x.context, &x.query, &x.expected), (&y.context, &y.query, &y.expected));
        }
        assert_ne!(a.iter().map(|t| &t.context).collect::<Vec<_>>(), c.iter().map(|t| &t.context).collect::<Vec<_>>());
        for task in &a {
            let size = if task.size_label == "8k" { 8_000 } else { 32_000 };
            assert!(
                task.context.len() <= size && task.context.len() >= size * 95 / 100,
                "{}: {}",
                task.id,
                task.context.len()
            );
        }
    }

    #[test]
    fn tasks_vary_domain_layout_and_question() {
        let tasks = generate_tasks(Family::Aggregate, &[8_000], 40, 11);
        let parts = |i: usize| {
            tasks
                .iter()
                .map(|t| t.variant.split('/').nth(i).unwrap().to_owned())
                .collect::<std::collections::BTreeSet<_>>()
        };
        assert_eq!(parts(0).len(), DOMAINS.len(), "{:?}", parts(0));
        assert_eq!(parts(1).len(), 4, "{:?}", parts(1));
        assert_eq!(parts(2).len(), Question::ALL.len(), "{:?}", parts(2));
        let queries: std::collections::BTreeSet<&str> = tasks.iter().map(|t| t.query.as_str()).collect();
        assert_eq!(queries.len(), tasks.len());
    }

    /// Recounts the answer of every count question from the text alone, for the layouts that parse as records.
    #[test]
    fn counts_match_an_independent_recount() {
        let mut checked = 0;
        for task in generate_tasks(Family::Aggregate, &[8_000, 16_000], 30, 5) {
            let layout = task.variant.split('/').nth(1).unwrap();
            let kind = task.variant.split('/').nth(2).unwrap();
            if layout == "prose" || !kind.starts_with("count") || !task.query.contains('=') {
                continue;
            }
            // Conditions written `field=value` in the question.
            let conditions: Vec<(String, String)> = task
                .query
                .split([' ', '?', '.'])
                .filter_map(|w| w.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            assert!(!conditions.is_empty(), "{}", task.query);
            let count = if layout == "csv" {
                csv_records(&task.context)
                    .iter()
                    .filter(|r| conditions.iter().all(|(k, v)| r.iter().any(|(rk, rv)| rk == k && rv == v)))
                    .count()
            } else {
                task.context.lines().filter(|l| conditions.iter().all(|(k, v)| line_has(l, k, v))).count()
            };
            assert_eq!(task.expected, Expected::Number { value: count as i64 }, "{}: {}", task.id, task.query);
            checked += 1;
        }
        assert!(checked >= 5, "only {checked} tasks checked");
    }

    /// Recounts every kind of answer from the context's text by matching whole values in each line.
    #[test]
    fn every_answer_matches_a_recount_of_the_lines() {
        let mut kinds = std::collections::BTreeSet::new();
        for task in generate_tasks(Family::Aggregate, &[8_000], 40, 9) {
            let lines: Vec<&str> = task.context.lines().filter(|l| !l.is_empty()).collect();
            let has = |line: &str, value: &str| {
                line.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-')).any(|w| w == value)
            };
            // The values a question names: quoted, after `=`, or after the field name.
            let domain = DOMAINS.iter().find(|d| task.variant.starts_with(d.name)).unwrap();
            let named: Vec<String> = domain
                .categories
                .iter()
                .flat_map(|c| c.values.iter())
                .filter(|v| crate::score::contains_term(&task.query, v))
                .map(|v| (*v).to_owned())
                .collect();
            let kind = task.variant.split('/').nth(2).unwrap();
            kinds.insert(kind.to_owned());
            match (&task.expected, kind) {
                (Expected::Number { value }, "count1" | "count2") => {
                    let count = lines.iter().filter(|l| named.iter().all(|v| has(l, v))).count();
                    assert_eq!(count as i64, *value, "{}: {} {named:?}", task.id, task.query);
                }
                (Expected::Label { answer, candidates }, "compare") => {
                    let count = |v: &str| lines.iter().filter(|l| has(l, v)).count();
                    let other = candidates.iter().find(|c| *c != answer).unwrap();
                    assert!(count(answer) > count(other), "{}: {}", task.id, task.query);
                }
                (Expected::Label { answer, candidates }, "most_common") => {
                    let condition: Vec<&String> = named.iter().filter(|v| !candidates.contains(v)).collect();
                    assert_eq!(condition.len(), 1, "{}: {}", task.id, task.query);
                    let count = |v: &str| lines.iter().filter(|l| has(l, condition[0]) && has(l, v)).count();
                    for other in candidates.iter().filter(|c| *c != answer) {
                        assert!(count(answer) > count(other), "{}: {answer} vs {other}", task.id);
                    }
                }
                (Expected::Label { answer, candidates }, "largest_total") => {
                    let field = number_field(domain, &task.context);
                    let total = |v: &str| -> i64 {
                        if task.variant.contains("/csv/") {
                            csv_records(&task.context)
                                .iter()
                                .filter(|r| r.iter().any(|(_, value)| value == v))
                                .map(|r| r.iter().find(|(k, _)| k == field).unwrap().1.parse::<i64>().unwrap())
                                .sum()
                        } else {
                            lines.iter().filter(|l| has(l, v)).map(|l| number_after(l, field)).sum()
                        }
                    };
                    for other in candidates.iter().filter(|c| *c != answer) {
                        assert!(total(answer) > total(other), "{}: {answer} vs {other}", task.id);
                    }
                }
                (Expected::Number { value }, "sum") => {
                    assert_eq!(named.len(), 1, "{}", task.query);
                    let field = number_field(domain, &task.context);
                    let total: i64 = if task.variant.contains("/csv/") {
                        csv_records(&task.context)
                            .iter()
                            .filter(|r| r.iter().any(|(_, v)| *v == named[0]))
                            .map(|r| r.iter().find(|(k, _)| k == field).unwrap().1.parse::<i64>().unwrap())
                            .sum()
                    } else {
                        lines.iter().filter(|l| has(l, &named[0])).map(|l| number_after(l, field)).sum()
                    };
                    assert_eq!(total, *value, "{}: {}", task.id, task.query);
                }
                (expected, kind) => panic!("unexpected {kind} with {expected:?}"),
            }
        }
        assert_eq!(kinds.len(), Question::ALL.len(), "{kinds:?}");
    }

    /// The number field of a context: the longest of the domain's names for it that its first record spells.
    fn number_field<'a>(domain: &'a Domain, context: &str) -> &'a str {
        let first = context.lines().find(|l| !l.is_empty()).unwrap();
        let mut names: Vec<&str> = domain.number_names.to_vec();
        names.sort_by_key(|n| std::cmp::Reverse(n.len()));
        names
            .into_iter()
            .find(|n| crate::score::contains_term(first, n) || crate::score::contains_term(first, &n.replace('_', " ")))
            .unwrap()
    }

    /// The number written after `field` (spelled as in records or in prose) in one line.
    fn number_after(line: &str, field: &str) -> i64 {
        for spelled in [field.to_owned(), field.replace('_', " ")] {
            if let Some(at) = line.find(&spelled) {
                let rest = &line[at + spelled.len()..];
                let digits: String = rest
                    .trim_start_matches(|c: char| !c.is_ascii_digit())
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                return digits.parse().unwrap();
            }
        }
        panic!("no {field} in {line}")
    }
}
