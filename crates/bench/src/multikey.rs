//! Multi-key retrieval: several statements about keys that look alike (`vault-17`, `vault-71`, `vault-170`), and
//! sometimes another attribute of the asked key itself; the question asks for one value of one key.

use crate::haystack::{self, KeyStyle, OTHER_ATTRIBUTES, ValueShape};
use crate::records::pick;
use crate::sniah::Filler;
use crate::{Expected, Generated};

const STATEMENT_FORMS: usize = 7;

/// A statement that `key` has `attribute` `value`, in one of several forms.
pub(crate) fn statement(form: usize, key: &str, attribute: &str, value: &str) -> String {
    match form % STATEMENT_FORMS {
        0 => format!("The {attribute} for {key} is {value}."),
        1 => format!("{key}: {attribute} = {value}"),
        2 => format!("Note that the {attribute} of {key} is {value}."),
        3 => format!("{key} -> {attribute}: {value}"),
        4 => format!("{{\"name\": \"{key}\", \"{}\": \"{value}\"}}", attribute.replace(' ', "_")),
        5 => format!("| {key} | {attribute} | {value} |"),
        _ => format!("Remember: {key} uses the {attribute} {value}."),
    }
}

/// One task of about `size` characters.
pub(crate) fn generate(size: usize, index: usize, rng: &mut fastrand::Rng) -> Generated {
    let shape = ValueShape::ALL[(index + rng.usize(..4)) % ValueShape::ALL.len()];
    let attribute = *pick(rng, shape.attributes());
    let keys = KeyStyle::random(rng);
    let number = rng.u32(10..1000);
    // More look-alikes in longer contexts, as in RULER's multi-key tasks.
    let lookalikes = (3 + size / 20_000).min(10);
    let mut numbers = haystack::similar_numbers(number, lookalikes, rng);
    numbers.push(number);
    rng.shuffle(&mut numbers);
    // Two or three statement forms per task, mixed.
    let forms: Vec<usize> = (0..2 + rng.usize(..2)).map(|_| rng.usize(..STATEMENT_FORMS)).collect();
    let mut values: Vec<String> = Vec::new();
    let mut needles = Vec::new();
    let mut answer = String::new();
    for n in &numbers {
        let value = shape.value(rng, &values);
        needles.push(statement(*pick(rng, &forms), &keys.key(*n), attribute, &value));
        if *n == number {
            answer.clone_from(&value);
        }
        values.push(value);
    }
    let trap = rng.bool();
    if trap {
        let value = shape.value(rng, &values);
        needles.push(statement(*pick(rng, &forms), &keys.key(number), pick::<&str>(rng, &OTHER_ATTRIBUTES), &value));
        values.push(value);
        rng.shuffle(&mut needles);
    }
    let filler = Filler::ALL[rng.usize(..Filler::ALL.len())];
    let context = haystack::scatter(size, &needles, filler, rng);
    let key = keys.key(number);
    let query = match rng.usize(..3) {
        0 => format!("What is the {attribute} for {key}? Answer with the {attribute} only."),
        1 => format!("Find the {attribute} of {key} in the text and reply with just that value."),
        _ => format!("Which {attribute} belongs to {key}? Give only the value."),
    };
    Generated {
        context,
        query,
        expected: Expected::Label { answer, candidates: values },
        variant: format!(
            "{}/{}/{}{}",
            shape.as_str(),
            filler_name(filler),
            numbers.len(),
            if trap { "+trap" } else { "" }
        ),
    }
}

pub(crate) fn filler_name(filler: Filler) -> &'static str {
    match filler {
        Filler::Noise => "noise",
        Filler::Essay => "essay",
        Filler::Log => "log",
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::{Expected, Family, generate};

    #[test]
    fn generation_is_deterministic_and_sized() {
        let a = generate(Family::Multikey, &[8_000, 32_000], 4, 5);
        let b = generate(Family::Multikey, &[8_000, 32_000], 4, 5);
        let c = generate(Family::Multikey, &[8_000, 32_000], 4, 6);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!((&x.context, &x.query, &x.expected), (&y.context, &y.query, &y.expected));
        }
        assert_ne!(a.iter().map(|t| &t.query).collect::<Vec<_>>(), c.iter().map(|t| &t.query).collect::<Vec<_>>());
        for task in &a {
            let size = if task.size_label == "8k" { 8_000 } else { 32_000 };
            assert!(task.context.len() <= size + 100 && task.context.len() >= size * 9 / 10, "{}", task.context.len());
        }
    }

    /// The key a question names, found by its prefix.
    pub(crate) fn key_in(query: &str) -> String {
        for prefix in crate::haystack::KEY_PREFIXES {
            for form in [format!("{prefix}-"), format!("{prefix} #"), format!("{prefix} "), format!("{prefix}_")] {
                for (at, _) in query.match_indices(&form) {
                    let digits: String = query[at + form.len()..].chars().take_while(char::is_ascii_digit).collect();
                    if !digits.is_empty() {
                        return format!("{form}{digits}");
                    }
                }
            }
        }
        panic!("no key in {query}")
    }

    /// Finds the answer again from the text: the one statement (line or sentence) that names the asked key as a
    /// whole term together with the asked attribute holds the answer and no other candidate.
    #[test]
    fn the_answer_is_the_only_value_stated_for_the_asked_key_and_attribute() {
        let tasks = generate(Family::Multikey, &[8_000, 16_000], 12, 21);
        let mut shapes = std::collections::BTreeSet::new();
        for task in &tasks {
            let Expected::Label { answer, candidates } = &task.expected else { panic!("{:?}", task.expected) };
            shapes.insert(task.variant.split('/').next().unwrap().to_owned());
            let attribute = crate::haystack::ValueShape::ALL
                .iter()
                .flat_map(|s| s.attributes().iter())
                .find(|a| task.query.contains(&format!(" {a} ")))
                .unwrap();
            let key = key_in(&task.query);
            let statements: Vec<&str> = task
                .context
                .split('\n')
                .flat_map(|line| line.split(". "))
                .filter(|s| {
                    crate::score::contains_term(s, &key)
                        && (s.contains(attribute) || s.contains(&attribute.replace(' ', "_")))
                })
                .collect();
            assert_eq!(statements.len(), 1, "{}: key {key:?} attribute {attribute}: {statements:?}", task.id);
            let named: Vec<&String> = candidates.iter().filter(|c| statements[0].contains(c.as_str())).collect();
            assert_eq!(named, [answer], "{}: {}", task.id, statements[0]);
            assert!(candidates.iter().all(|c| task.context.matches(c.as_str()).count() == 1));
            assert!(candidates.len() >= 4);
        }
        assert_eq!(shapes.len(), 4, "{shapes:?}");
    }
}
