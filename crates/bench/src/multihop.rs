//! Two facts to chain: "X works at Y" somewhere, "Y is headquartered in Z" elsewhere; the question asks for Z given X.
//! Three relations (employer and head office, product and factory country, musician and band's home city), written as
//! sentences scattered through filler or as two kinds of records, among many distractor chains.

use crate::haystack;
use crate::records::{Layout, Renderer, pick};
use crate::sniah::Filler;
use crate::{Expected, Generated};

struct Relation {
    name: &'static str,
    /// Subject, middle and answer column names for records.
    columns: [&'static str; 3],
    middle_column: &'static str,
    first: &'static [&'static str],
    second: &'static [&'static str],
    questions: &'static [&'static str],
    answers: &'static [&'static str],
}

const CITIES: [&str; 40] = [
    "Lyon", "Oslo", "Porto", "Graz", "Tallinn", "Leeds", "Turin", "Gdansk", "Malmo", "Ghent", "Bilbao", "Utrecht",
    "Brno", "Aarhus", "Cork", "Split", "Krakow", "Tampere", "Basel", "Bremen", "Nantes", "Seville", "Bergen", "Riga",
    "Vilnius", "Zagreb", "Bologna", "Antwerp", "Dresden", "Lausanne", "Galway", "Valencia", "Geneva", "Leipzig",
    "Toulouse", "Salzburg", "Uppsala", "Kaunas", "Plovdiv", "Coimbra",
];
const COUNTRIES: [&str; 30] = [
    "Portugal",
    "Norway",
    "Austria",
    "Estonia",
    "Belgium",
    "Poland",
    "Sweden",
    "Finland",
    "Ireland",
    "Croatia",
    "Latvia",
    "Lithuania",
    "Slovenia",
    "Denmark",
    "Iceland",
    "Greece",
    "Hungary",
    "Romania",
    "Bulgaria",
    "Slovakia",
    "Chile",
    "Peru",
    "Kenya",
    "Ghana",
    "Vietnam",
    "Malaysia",
    "Morocco",
    "Tunisia",
    "Uruguay",
    "Canada",
];

const RELATIONS: [Relation; 3] = [
    Relation {
        name: "employer",
        columns: ["employee", "company", "headquarters"],
        middle_column: "company",
        first: &[
            "{s} works at {m}.",
            "{s} has been employed by {m} since {y}.",
            "{s} joined {m} as an analyst in {y}.",
        ],
        second: &[
            "{m} is headquartered in {a}.",
            "The head office of {m} is in {a}.",
            "{m} has its headquarters in {a}.",
        ],
        questions: &[
            "In which city is the headquarters of the company where {s} works?",
            "{s}'s employer has its head office in which city?",
            "Which city is home to the headquarters of {s}'s company?",
        ],
        answers: &CITIES,
    },
    Relation {
        name: "factory",
        columns: ["product", "plant", "country"],
        middle_column: "plant",
        first: &[
            "The {s} is assembled at the {m} plant.",
            "Production of the {s} moved to the {m} plant in {y}.",
            "Every {s} is built by the {m} plant.",
        ],
        second: &[
            "The {m} plant is located in {a}.",
            "The {m} plant, opened in {y}, sits in {a}.",
            "{a} is where the {m} plant operates.",
        ],
        questions: &[
            "In which country is the {s} assembled?",
            "The plant that builds the {s} is in which country?",
            "Which country does the {s} come from, judging by the plant that makes it?",
        ],
        answers: &COUNTRIES,
    },
    Relation {
        name: "band",
        columns: ["musician", "band", "hometown"],
        middle_column: "band",
        first: &["{s} plays in {m}.", "{s} has been the drummer of {m} since {y}.", "{s} sings with {m}."],
        second: &["{m} was formed in {a}.", "{m} started out in {a} in {y}.", "The band {m} comes from {a}."],
        questions: &[
            "In which city was the band that {s} plays in formed?",
            "Where does {s}'s band come from? Name the city.",
            "Which city is the band of {s} from?",
        ],
        answers: &CITIES,
    },
];

const FIRST_NAMES: [&str; 30] = [
    "Ada", "Bruno", "Clara", "Dmitri", "Elena", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Kira", "Luca", "Mara",
    "Nils", "Olga", "Pablo", "Quinn", "Rosa", "Sven", "Tara", "Umar", "Vera", "Wim", "Xenia", "Yusuf", "Zora", "Ana",
    "Ben", "Cleo", "Dario",
];
const LAST_NAMES: [&str; 30] = [
    "Moreno",
    "Lindqvist",
    "Okafor",
    "Novak",
    "Brennan",
    "Kowalski",
    "Haddad",
    "Ferreira",
    "Jansen",
    "Rossi",
    "Petrov",
    "Nakamura",
    "Dubois",
    "Schmidt",
    "Alvarez",
    "Berg",
    "Costa",
    "Eriksen",
    "Fischer",
    "Galli",
    "Horvat",
    "Ivanova",
    "Keller",
    "Larsen",
    "Mendes",
    "Nowak",
    "Ortega",
    "Pereira",
    "Quist",
    "Ramos",
];
const SYLLABLES: [&str; 20] = [
    "Nor", "Vex", "Tal", "Quor", "Bri", "Zen", "Mar", "Lum", "Cor", "Del", "Fin", "Gal", "Hex", "Ion", "Jor", "Kel",
    "Orb", "Pra", "Syl", "Tor",
];
const PRODUCTS: [&str; 12] =
    ["Aurora", "Vega", "Nimbus", "Orion", "Zephyr", "Atlas", "Lumen", "Kestrel", "Helix", "Nova", "Pulse", "Terra"];
const COMPANY_SUFFIXES: [&str; 5] = ["Labs", "Systems", "Group", "Works", "Dynamics"];
const BAND_WORDS: [&str; 16] = [
    "Comets", "Lanterns", "Foxes", "Tides", "Echoes", "Wolves", "Sparrows", "Mirrors", "Harbours", "Embers", "Pilots",
    "Ravens", "Orchids", "Static", "Lines", "Rivers",
];

/// A name for the `i`-th subject (unique per `i`).
fn subject(relation: &Relation, i: usize, offset: usize) -> String {
    let j = i + offset;
    match relation.name {
        "factory" => format!("{} {}", PRODUCTS[j % PRODUCTS.len()], 100 + j),
        _ => format!("{} {}", FIRST_NAMES[j % 30], LAST_NAMES[(j / 30 + j) % 30]),
    }
}

/// A name for the `i`-th middle entity (unique per `i`).
fn middle(relation: &Relation, i: usize, offset: usize) -> String {
    let j = i + offset;
    let word = format!("{}{}", SYLLABLES[j % 20], SYLLABLES[(j / 20 + 7) % 20].to_lowercase());
    match relation.name {
        "employer" => format!("{word} {}", COMPANY_SUFFIXES[(j / 400) % 5]),
        "band" => format!("{word} {}", BAND_WORDS[j % 16]),
        _ => word,
    }
}

/// One task of about `size` characters.
pub(crate) fn generate(size: usize, index: usize, rng: &mut fastrand::Rng) -> Generated {
    let relation = &RELATIONS[(index + rng.usize(..3)) % RELATIONS.len()];
    let as_records = rng.usize(..3) == 0;
    // Names are unique up to 900 subjects and 400 middles.
    let chains = if as_records { (size / 90).clamp(6, 800) } else { (size / 700).clamp(6, 600) };
    let middles = (chains / 2).clamp(4, 400);
    let (subject_offset, middle_offset) = (rng.usize(..300), rng.usize(..300));
    let subjects: Vec<String> = (0..chains).map(|i| subject(relation, i * 7 % 900, subject_offset)).collect();
    let middle_names: Vec<String> = (0..middles).map(|i| middle(relation, i * 11 % 400, middle_offset)).collect();
    let answer_of: Vec<&str> = middle_names.iter().map(|_| *pick(rng, relation.answers)).collect();
    let employer: Vec<usize> = subjects.iter().map(|_| rng.usize(..middles)).collect();
    let asked = rng.usize(..chains);
    let answer = answer_of[employer[asked]].to_owned();
    let mut candidates: Vec<String> = answer_of.iter().map(|a| (*a).to_owned()).collect();
    candidates.sort();
    candidates.dedup();
    let year = |rng: &mut fastrand::Rng| rng.u32(1995..2025).to_string();
    let fill = |template: &str, s: &str, m: &str, a: &str, y: &str| {
        template.replace("{s}", s).replace("{m}", m).replace("{a}", a).replace("{y}", y)
    };
    let (context, format) = if as_records {
        // Names hold spaces, which key=value lines do not delimit.
        let layout = [Layout::Csv, Layout::JsonLines][rng.usize(..2)];
        let [s_col, m_col, a_col] = relation.columns;
        let first = Renderer::new(layout, vec![s_col.to_owned(), m_col.to_owned()], vec![false, false], rng);
        let second =
            Renderer::new(layout, vec![relation.middle_column.to_owned(), a_col.to_owned()], vec![false, false], rng);
        let mut text = first.header();
        for (i, s) in subjects.iter().enumerate() {
            text.push_str(&first.line(&[s.clone(), middle_names[employer[i]].clone()], i));
        }
        text.push('\n');
        text.push_str(&second.header());
        for (i, m) in middle_names.iter().enumerate() {
            text.push_str(&second.line(&[m.clone(), answer_of[i].to_owned()], i));
        }
        // Records carry no filler: pad with a notes section after the tables.
        let pad = size.saturating_sub(text.len());
        if pad > 0 {
            let mut notes = String::from("\nNotes:\n");
            crate::sniah::fill(&mut notes, pad.saturating_sub(1), Filler::Essay, rng);
            let cut = notes[..pad.min(notes.len())].rfind('.').map_or(0, |i| i + 1);
            notes.truncate(cut);
            text.push_str(&notes);
        }
        (text, layout.as_str())
    } else {
        let mut needles: Vec<String> = Vec::new();
        for (i, s) in subjects.iter().enumerate() {
            let y = year(rng);
            needles.push(fill(pick::<&str>(rng, relation.first), s, &middle_names[employer[i]], "", &y));
        }
        for (i, m) in middle_names.iter().enumerate() {
            let y = year(rng);
            needles.push(fill(pick::<&str>(rng, relation.second), "", m, answer_of[i], &y));
        }
        rng.shuffle(&mut needles);
        let filler = [Filler::Essay, Filler::Noise][rng.usize(..2)];
        (haystack::scatter(size, &needles, filler, rng), "prose")
    };
    let query = fill(pick::<&str>(rng, relation.questions), &subjects[asked], "", "", "");
    Generated {
        context,
        query: format!("{query} Answer with the name only."),
        expected: Expected::Label { answer, candidates },
        variant: format!("{}/{format}/{chains}", relation.name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Family, generate as generate_tasks};

    #[test]
    fn generation_is_deterministic_sized_and_varied() {
        let a = generate_tasks(Family::Multihop, &[8_000, 32_000], 9, 2);
        let b = generate_tasks(Family::Multihop, &[8_000, 32_000], 9, 2);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!((&x.context, &x.query, &x.expected), (&y.context, &y.query, &y.expected));
        }
        for task in &a {
            let size = if task.size_label == "8k" { 8_000 } else { 32_000 };
            assert!(
                task.context.len() <= size + 200 && task.context.len() >= size * 9 / 10,
                "{} {}: {}",
                task.id,
                task.variant,
                task.context.len()
            );
        }
        let relations: std::collections::BTreeSet<&str> =
            a.iter().map(|t| t.variant.split('/').next().unwrap()).collect();
        assert_eq!(relations.len(), 3);
        let formats: std::collections::BTreeSet<&str> =
            a.iter().map(|t| t.variant.split('/').nth(1).unwrap()).collect();
        assert!(formats.len() >= 2, "{formats:?}");
    }

    /// Follows the chain through the text: the one line or sentence naming the subject gives the middle entity, the
    /// one line or sentence giving that entity an answer-pool name gives the answer.
    #[test]
    fn the_answer_follows_the_two_facts_in_the_text() {
        for task in generate_tasks(Family::Multihop, &[8_000, 20_000], 12, 4) {
            let Expected::Label { answer, candidates } = &task.expected else { panic!() };
            let relation = RELATIONS.iter().find(|r| task.variant.starts_with(r.name)).unwrap();
            let subject = (0..1300)
                .map(|j| subject(relation, 0, j))
                .find(|s| {
                    task.query.contains(&format!("{s} "))
                        || task.query.contains(&format!("{s}'"))
                        || task.query.contains(&format!("{s}?"))
                        || task.query.contains(&format!("{s},"))
                })
                .unwrap();
            let statements: Vec<&str> = task.context.split('\n').flat_map(|l| l.split(". ")).collect();
            let about_subject: Vec<&&str> =
                statements.iter().filter(|s| crate::score::contains_term(s, &subject)).collect();
            assert_eq!(about_subject.len(), 1, "{}: {subject}: {about_subject:?}", task.id);
            let middle = (0..800)
                .map(|j| middle(relation, 0, j))
                .find(|m| crate::score::contains_term(about_subject[0], m))
                .unwrap();
            let about_middle: Vec<&&str> = statements
                .iter()
                .filter(|s| {
                    crate::score::contains_term(s, &middle)
                        && candidates.iter().any(|c| crate::score::contains_term(s, c))
                })
                .collect();
            assert_eq!(about_middle.len(), 1, "{}: {middle}: {about_middle:?}", task.id);
            let named: Vec<&String> =
                candidates.iter().filter(|c| crate::score::contains_term(about_middle[0], c)).collect();
            assert_eq!(named, [answer], "{}", task.id);
        }
    }
}
