//! Pairs of records that meet a condition: people (customers, employees, patients) who share a phone number, licence
//! plate or postal code, or events by the same user within N minutes. Every pair counts; scored by F1 over pairs.

use std::collections::BTreeMap;

use crate::records::{self, Layout, Renderer, pick};
use crate::{Expected, Generated};

struct Entity {
    nouns: &'static [&'static str],
    id_names: &'static [&'static str],
    id_prefix: &'static str,
    other_names: &'static [&'static str],
    other_values: &'static [&'static str],
    number_names: &'static [&'static str],
}

const ENTITIES: [Entity; 3] = [
    Entity {
        nouns: &["customers", "clients"],
        id_names: &["customer_id", "customer", "client"],
        id_prefix: "c",
        other_names: &["tier", "plan"],
        other_values: &["free", "basic", "plus", "pro", "enterprise"],
        number_names: &["orders", "purchases"],
    },
    Entity {
        nouns: &["employees", "staff members"],
        id_names: &["employee_id", "badge", "staff_no"],
        id_prefix: "E-",
        other_names: &["department", "dept"],
        other_values: &["sales", "legal", "finance", "support", "research", "facilities"],
        number_names: &["years", "tenure_years"],
    },
    Entity {
        nouns: &["patients", "members"],
        id_names: &["patient_id", "member_no", "record"],
        id_prefix: "p",
        other_names: &["ward", "clinic"],
        other_values: &["north", "south", "east", "west", "annex"],
        number_names: &["visits", "age"],
    },
];

/// Attributes whose values are drawn from a space large enough that duplicates are (almost) only the planted ones.
const SHARED: [(&str, &[&str]); 3] = [
    ("phone number", &["phone", "phone_number", "tel"]),
    ("licence plate", &["plate", "licence_plate", "vehicle"]),
    ("postal code", &["postcode", "postal_code", "zip"]),
];

/// Two to five pairs of distinct rows, no row in two pairs: where a generator plants the pairs the question asks for.
fn planted_pairs(rows: usize, rng: &mut fastrand::Rng) -> Vec<(usize, usize)> {
    let planted = rng.usize(2..=5).min(rows / 2);
    let mut used: Vec<usize> = Vec::new();
    let mut pairs = Vec::with_capacity(planted);
    for _ in 0..planted {
        let (a, b) = loop {
            let (a, b) = (rng.usize(..rows), rng.usize(..rows));
            if a != b && !used.contains(&a) && !used.contains(&b) {
                break (a, b);
            }
        };
        used.extend([a, b]);
        pairs.push((a, b));
    }
    pairs
}

fn shared_value(kind: usize, rng: &mut fastrand::Rng) -> String {
    match kind {
        0 => format!("{}-{:03}-{:04}", rng.u32(200..1000), rng.u32(..1000), rng.u32(..10_000)),
        1 => format!(
            "{}{}-{:03}-{}{}",
            rng.uppercase(),
            rng.uppercase(),
            rng.u32(..1000),
            rng.uppercase(),
            rng.uppercase()
        ),
        _ => format!("{:05}-{}{}", rng.u32(..100_000), rng.uppercase(), rng.uppercase()),
    }
}

const PAIR_FORMAT: [&str; 3] = [
    "List each pair as (id, id), one pair per line.",
    "Give every pair in the form (id, id), one per line; the order does not matter.",
    "Answer with the pairs, each written as (id, id), one pair per line.",
];

/// One task of about `size` characters.
pub(crate) fn generate(size: usize, index: usize, rng: &mut fastrand::Rng) -> Generated {
    let layout = Layout::ALL[(index + rng.usize(..4)) % Layout::ALL.len()];
    if (index + rng.usize(..2)).is_multiple_of(2) {
        shared_attribute(size, layout, rng)
    } else {
        close_events(size, layout, rng)
    }
}

#[derive(Debug, Clone)]
struct Person {
    id: String,
    shared: String,
    other: &'static str,
    number: u32,
}

fn shared_attribute(size: usize, layout: Layout, rng: &mut fastrand::Rng) -> Generated {
    let entity = pick(rng, &ENTITIES);
    let kind = rng.usize(..SHARED.len());
    let (attribute, attribute_names) = SHARED[kind];
    let id_name = *pick(rng, entity.id_names);
    let shared_name = *pick(rng, attribute_names);
    let other_name = *pick(rng, entity.other_names);
    let number_name = *pick(rng, entity.number_names);
    let mut fields = vec![id_name.to_owned(), other_name.to_owned(), shared_name.to_owned(), number_name.to_owned()];
    let mut numeric = vec![false, false, false, true];
    // The shared attribute's column moves.
    if rng.bool() {
        fields.swap(1, 2);
        numeric.swap(1, 2);
    }
    let swapped = fields[1] == shared_name;
    let renderer = Renderer::new(layout, fields, numeric, rng);
    let mut next_id = rng.u32(10_000..20_000);
    let rows = records::fill_rows(
        size,
        &renderer,
        rng,
        |rng, _| {
            next_id += rng.u32(1..40);
            Person {
                id: format!("{}{next_id}", entity.id_prefix),
                shared: shared_value(kind, rng),
                other: pick::<&str>(rng, entity.other_values),
                number: rng.u32(1..80),
            }
        },
        |p: &Person| person_values(p, swapped),
    );
    let mut rows = rows;
    // Plant a few pairs: a later record takes an earlier one's value (same width, so the size holds).
    for (a, b) in planted_pairs(rows.len(), rng) {
        rows[b].shared = rows[a].shared.clone();
    }
    let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for row in &rows {
        groups.entry(&row.shared).or_default().push(&row.id);
    }
    let mut gold = Vec::new();
    for ids in groups.values() {
        for (i, a) in ids.iter().enumerate() {
            for b in &ids[i + 1..] {
                gold.push(((*a).to_owned(), (*b).to_owned()));
            }
        }
    }
    let context = records::render_rows(&renderer, &rows, |p| person_values(p, swapped));
    let noun = *pick(rng, entity.nouns);
    let field = renderer.field_name(shared_name);
    let id_field = renderer.field_name(id_name);
    let style = rng.usize(..3);
    let question = match style {
        0 => format!("Which pairs of {noun} share the same {attribute} ({field})? Identify them by {id_field}."),
        1 => format!("Find every two {noun} whose {field} is identical, identified by {id_field}."),
        _ => format!("Some {noun} have the same {attribute} as another one. Which pairs (by {id_field}) are they?"),
    };
    Generated {
        context,
        query: format!("{question} {}", PAIR_FORMAT[style]),
        variant: format!("shared-{}/{}/{}", shared_name, layout.as_str(), gold.len()),
        expected: Expected::Pairs { pairs: gold },
    }
}

fn person_values(p: &Person, swapped: bool) -> Vec<String> {
    let (second, third) =
        if swapped { (p.shared.clone(), p.other.to_owned()) } else { (p.other.to_owned(), p.shared.clone()) };
    vec![p.id.clone(), second, third, p.number.to_string()]
}

#[derive(Debug, Clone)]
struct Event {
    id: String,
    user: String,
    minute: u64,
    action: &'static str,
}

const ACTIONS: [&str; 6] = ["login", "purchase", "refund", "password_reset", "export", "delete"];

fn close_events(size: usize, layout: Layout, rng: &mut fastrand::Rng) -> Generated {
    let within = *pick(rng, &[5u64, 10, 15, 30]);
    let (id_name, user_name, time_name, action_name) = (
        *pick(rng, &["event_id", "event_ref", "id"]),
        *pick(rng, &["user", "account", "actor"]),
        *pick(rng, &["ts", "time", "at"]),
        *pick(rng, &["action", "type", "op"]),
    );
    let renderer = Renderer::new(
        layout,
        vec![time_name.to_owned(), id_name.to_owned(), user_name.to_owned(), action_name.to_owned()],
        vec![false; 4],
        rng,
    );
    let time_style = rng.usize(..4);
    // Few events per user over two months, so that same-user events close in time are (almost) only planted ones.
    let users = (size / 250).max(20) as u32;
    let span = 60 * 24 * 60;
    let start = rng.u64(..200) * 24 * 60;
    let id_base = rng.u32(10_000..50_000);
    let make = |rng: &mut fastrand::Rng, _| Event {
        id: String::new(),
        user: format!("u{}", 100 + rng.u32(..users)),
        minute: start + rng.u64(..span),
        action: pick::<&str>(rng, &ACTIONS),
    };
    let values = |e: &Event| -> Vec<String> {
        vec![
            records::timestamp(e.minute * 60, time_style),
            format!("ev-{}", id_base),
            e.user.clone(),
            e.action.to_owned(),
        ]
    };
    let mut rows = records::fill_rows(size, &renderer, rng, make, values);
    for (a, b) in planted_pairs(rows.len(), rng) {
        rows[b].user = rows[a].user.clone();
        rows[b].minute = rows[a].minute + rng.u64(1..within);
    }
    // A log is in time order; ids follow it.
    rows.sort_by_key(|e| e.minute);
    let mut id = id_base;
    for row in &mut rows {
        id += rng.u32(1..9);
        row.id = format!("ev-{id}");
    }
    let mut gold = Vec::new();
    for (i, a) in rows.iter().enumerate() {
        for b in rows[i + 1..].iter().take_while(|b| b.minute - a.minute < within) {
            if a.user == b.user {
                gold.push((a.id.clone(), b.id.clone()));
            }
        }
    }
    let context = records::render_rows(&renderer, &rows, |e: &Event| {
        vec![records::timestamp(e.minute * 60, time_style), e.id.clone(), e.user.clone(), e.action.to_owned()]
    });
    let (user_field, id_field) = (renderer.field_name(user_name), renderer.field_name(id_name));
    let style = rng.usize(..3);
    let question = match style {
        0 => format!(
            "Which pairs of events have the same {user_field} and happened less than {within} minutes apart? \
             Identify events by {id_field}."
        ),
        1 => {
            format!("Find every two events by one {user_field} that are under {within} minutes apart (by {id_field}).")
        }
        _ => format!(
            "List the pairs of events (by {id_field}) where the same {user_field} acted twice within less than \
             {within} minutes."
        ),
    };
    Generated {
        context,
        query: format!("{question} {}", PAIR_FORMAT[style]),
        variant: format!("within-{within}m/{}/{}", layout.as_str(), gold.len()),
        expected: Expected::Pairs { pairs: gold },
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use crate::{Expected, Family, generate};

    #[test]
    fn generation_is_deterministic_sized_and_varied() {
        let a = generate(Family::Pairs, &[8_000, 32_000], 8, 5);
        let b = generate(Family::Pairs, &[8_000, 32_000], 8, 5);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!((&x.context, &x.query, &x.expected), (&y.context, &y.query, &y.expected));
        }
        for task in &a {
            let size = if task.size_label == "8k" { 8_000 } else { 32_000 };
            assert!(task.context.len() <= size + 50 && task.context.len() >= size * 95 / 100, "{}", task.context.len());
            assert!(task.query.contains("(id, id)"));
        }
        let kinds: BTreeSet<&str> = a.iter().map(|t| t.variant.split('-').next().unwrap()).collect();
        assert_eq!(kinds.len(), 2, "{kinds:?}");
        let layouts: BTreeSet<&str> = a.iter().map(|t| t.variant.split('/').nth(1).unwrap()).collect();
        assert!(layouts.len() >= 3, "{layouts:?}");
    }

    /// The ids of every record in a line of any layout, and the other tokens of the line.
    fn id_and_tokens(line: &str) -> Option<(String, Vec<String>)> {
        let tokens: Vec<String> = line
            .split(|c: char| !(c.is_alphanumeric() || c == '-' || c == '_'))
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect();
        let id = tokens.iter().find(|t| {
            (t.starts_with("ev-") || t.starts_with("E-") || t.starts_with('c') || t.starts_with('p'))
                && t.len() >= 5
                && t.trim_start_matches(|c: char| !c.is_ascii_digit()).chars().all(|c| c.is_ascii_digit())
                && t.chars().any(|c| c.is_ascii_digit())
        })?;
        Some((id.clone(), tokens))
    }

    /// Recomputes the pairs from the text: for shared attributes, records with the same value of the attribute's
    /// shape; for events, same user token and times parsed back within the window.
    #[test]
    fn pairs_match_an_independent_recount() {
        for task in generate(Family::Pairs, &[8_000, 16_000], 12, 31) {
            let Expected::Pairs { pairs } = &task.expected else { panic!() };
            assert!(!pairs.is_empty(), "{}", task.id);
            let gold: BTreeSet<(String, String)> = pairs
                .iter()
                .map(|(a, b)| if a < b { (a.clone(), b.clone()) } else { (b.clone(), a.clone()) })
                .collect();
            let lines: Vec<(String, Vec<String>)> = task.context.lines().filter_map(id_and_tokens).collect();
            let mut found = BTreeSet::new();
            if task.variant.starts_with("shared") {
                let shape = |t: &str| crate::score::shape(t);
                let value_shape = if task.query.contains("phone") || task.query.contains("tel") {
                    "999-999-9999"
                } else if task.query.contains("plate") || task.query.contains("vehicle") {
                    "aa-999-aa"
                } else {
                    "99999-aa"
                };
                let valued: Vec<(&String, &String)> = lines
                    .iter()
                    .map(|(id, tokens)| (id, tokens.iter().find(|t| shape(t) == value_shape).unwrap()))
                    .collect();
                for (i, (a, va)) in valued.iter().enumerate() {
                    for (b, vb) in &valued[i + 1..] {
                        if va == vb {
                            found.insert(if a < b {
                                ((*a).clone(), (*b).clone())
                            } else {
                                ((*b).clone(), (*a).clone())
                            });
                        }
                    }
                }
            } else {
                let within: i64 = task.variant["within-".len()..].split('m').next().unwrap().parse().unwrap();
                let events: Vec<(String, String, i64)> = task
                    .context
                    .lines()
                    .filter_map(|line| {
                        let (id, tokens) = id_and_tokens(line)?;
                        let user =
                            tokens.iter().find(|t| t.starts_with('u') && t[1..].chars().all(|c| c.is_ascii_digit()))?;
                        Some((id, user.clone(), minutes(line)))
                    })
                    .collect();
                for (i, (a, ua, ta)) in events.iter().enumerate() {
                    for (b, ub, tb) in &events[i + 1..] {
                        if ua == ub && (ta - tb).abs() < within {
                            found.insert(if a < b { (a.clone(), b.clone()) } else { (b.clone(), a.clone()) });
                        }
                    }
                }
            }
            assert_eq!(found, gold, "{} {}", task.id, task.variant);
        }
    }

    /// Minutes since the start of 2026 of the one timestamp in `line`, in any of the styles used.
    fn minutes(line: &str) -> i64 {
        const DAYS: [i64; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        const NAMES: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
        let words: Vec<&str> = line.split([' ', ',', '"', '[', ']', ';', '|']).collect();
        let (month, day, clock) = if let Some(w) = words.iter().find(|w| w.starts_with("2026-")) {
            // 2026-03-14T06:56:21Z or 2026-03-14 06:56:21
            let (date, clock) = match w.split_once('T') {
                Some((d, c)) => (d, c.trim_end_matches('Z').to_owned()),
                None => (*w, words.iter().skip_while(|x| x != &w).nth(1).unwrap().to_string()),
            };
            let mut parts = date.split('-').skip(1).map(|p| p.parse::<i64>().unwrap());
            (parts.next().unwrap(), parts.next().unwrap(), clock)
        } else if let Some(w) = words.iter().find(|w| w.ends_with("/2026")) {
            let mut parts = w.split('/').map(|p| p.parse::<i64>().unwrap());
            let day = parts.next().unwrap();
            (parts.next().unwrap(), day, words.iter().skip_while(|x| x != &w).nth(1).unwrap().to_string())
        } else {
            let at = words.iter().position(|w| NAMES.contains(w)).unwrap();
            let month = NAMES.iter().position(|n| *n == words[at]).unwrap() as i64 + 1;
            (month, words[at - 1].parse().unwrap(), words[at + 2].to_owned())
        };
        let mut hm = clock.split(':').map(|p| p.trim_end_matches(['.', ':']).parse::<i64>().unwrap());
        let days: i64 = DAYS[..(month - 1) as usize].iter().sum::<i64>() + day - 1;
        days * 24 * 60 + hm.next().unwrap() * 60 + hm.next().unwrap()
    }
}
