//! Multi-value retrieval: one key has several values stated far apart, look-alike keys have values too; the question
//! asks for every value of the one key, scored by F1 over the set.

use crate::haystack::{self, KeyStyle, ValueShape};
use crate::records::pick;
use crate::sniah::Filler;
use crate::{Expected, Generated};

const STATEMENT_FORMS: usize = 6;

/// A statement that `value` is one of the `attribute`s of `key`, in one of several forms.
fn statement(form: usize, key: &str, attribute: &str, value: &str) -> String {
    match form % STATEMENT_FORMS {
        0 => format!("One of the {attribute}s for {key} is {value}."),
        1 => format!("{key} also has the {attribute} {value}."),
        2 => format!("Another {attribute} recorded for {key}: {value}."),
        3 => format!("{{\"key\": \"{key}\", \"{}\": \"{value}\"}}", attribute.replace(' ', "_")),
        4 => format!("{key},{},{value}", attribute.replace(' ', "_")),
        _ => format!("Add {value} to the list of {attribute}s of {key}."),
    }
}

/// One task of about `size` characters.
pub(crate) fn generate(size: usize, index: usize, rng: &mut fastrand::Rng) -> Generated {
    let shape = ValueShape::WITH_DIGITS[(index + rng.usize(..3)) % ValueShape::WITH_DIGITS.len()];
    let attribute = *pick(rng, shape.attributes());
    let keys = KeyStyle::random(rng);
    let number = rng.u32(10..1000);
    let lookalikes = haystack::similar_numbers(number, (2 + size / 30_000).min(8), rng);
    let forms: Vec<usize> = (0..2 + rng.usize(..2)).map(|_| rng.usize(..STATEMENT_FORMS)).collect();
    let mut taken: Vec<String> = Vec::new();
    let mut needles = Vec::new();
    let mut items = Vec::new();
    for _ in 0..rng.usize(2..=6) {
        let value = shape.value(rng, &taken);
        needles.push(statement(*pick(rng, &forms), &keys.key(number), attribute, &value));
        items.push(value.clone());
        taken.push(value);
    }
    for other in &lookalikes {
        for _ in 0..rng.usize(1..=3) {
            let value = shape.value(rng, &taken);
            needles.push(statement(*pick(rng, &forms), &keys.key(*other), attribute, &value));
            taken.push(value);
        }
    }
    // Values of other keys outnumber the asked ones two to one, so that listing every value scores at most 0.5.
    while taken.len() < 3 * items.len() {
        let value = shape.value(rng, &taken);
        needles.push(statement(*pick(rng, &forms), &keys.key(*pick(rng, &lookalikes)), attribute, &value));
        taken.push(value);
    }
    rng.shuffle(&mut needles);
    let filler = Filler::ALL[rng.usize(..Filler::ALL.len())];
    let context = haystack::scatter(size, &needles, filler, rng);
    let key = keys.key(number);
    let query = match rng.usize(..3) {
        0 => format!("List all the {attribute}s recorded for {key}, separated by commas."),
        1 => format!("What are all the {attribute} values given for {key}? List each one once."),
        _ => format!(
            "{key} appears with several {attribute}s in the text; give every one of them as a comma-separated list."
        ),
    };
    Generated {
        context,
        query,
        variant: format!(
            "{}/{}/{}of{}",
            shape.as_str(),
            crate::multikey::filler_name(filler),
            items.len(),
            taken.len()
        ),
        expected: Expected::Set { items, candidates: taken },
    }
}

#[cfg(test)]
mod tests {
    use crate::multikey::tests::key_in;
    use crate::{Expected, Family, generate};

    #[test]
    fn generation_is_deterministic_and_sized() {
        let a = generate(Family::Multivalue, &[8_000, 32_000], 4, 5);
        let b = generate(Family::Multivalue, &[8_000, 32_000], 4, 5);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!((&x.context, &x.query, &x.expected), (&y.context, &y.query, &y.expected));
        }
        for task in &a {
            let size = if task.size_label == "8k" { 8_000 } else { 32_000 };
            assert!(task.context.len() <= size + 100 && task.context.len() >= size * 9 / 10, "{}", task.context.len());
        }
    }

    /// Collects the values again from the text: every statement naming the asked key as a whole term.
    #[test]
    fn the_items_are_every_value_stated_for_the_asked_key() {
        for task in generate(Family::Multivalue, &[8_000, 16_000], 10, 8) {
            let Expected::Set { items, candidates } = &task.expected else { panic!("{:?}", task.expected) };
            let key = key_in(&task.query);
            let mut found: Vec<String> = task
                .context
                .split('\n')
                .flat_map(|line| line.split(". "))
                .filter(|s| crate::score::contains_term(s, &key))
                .flat_map(|s| candidates.iter().filter(|c| s.contains(c.as_str())).cloned().collect::<Vec<_>>())
                .collect();
            found.sort();
            let mut expected = items.clone();
            expected.sort();
            assert_eq!(found, expected, "{}: {key}", task.id);
            assert!(items.len() >= 2 && candidates.len() > items.len());
            // All the values of every key listed: recall 1 but precision falls.
            assert!(task.expected.score(Some(&candidates.join(", "))) < 0.9);
            assert_eq!(task.expected.score(Some(&items.join(", "))), 1.0);
        }
    }
}
