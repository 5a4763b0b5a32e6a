//! What a question asks for, as far as its wording shows: a value found in one place, or an aggregate over many
//! (a count, a sum, an average, an extreme, a ranking, a proportion). Models answer the first kind well by reading;
//! the second needs every matching item, which one pass of reading miscounts and code gets exact. Routing and the
//! notes to small models use it.
//!
//! The test is lexical on purpose: it needs no model call, it is the same for every model, and it looks for the
//! families of words that aggregate questions are built from rather than for any one phrasing. A lookup phrased with
//! one of these words ("the most recent deploy") is taken for an aggregate; that costs time (the RLM runs), never
//! correctness.

/// Words and phrases that make a question an aggregate, grouped by what they ask for. Matched at word boundaries on
/// the lower-cased question; a phrase's words may be separated by any non-word characters, and `*` stands for up to
/// three words or none ("more errors than", "more failed logins than", "more than").
const AGGREGATE_CUES: &[(&str, &str)] = &[
    // "the number of", not "number of" alone: "the serial number of room 898" names one value.
    ("a count", "how many|how much|how often|the number of|a number of|total number of|count|counts|counted|tally"),
    ("a total", "total|totals|sum|sums|add up|altogether|combined|overall"),
    ("a statistic", "average|averages|median|percent|percentage|proportion|ratio"),
    (
        RANKING,
        "most|least|fewest|highest|lowest|largest|smallest|biggest|maximum|minimum|max|min|longest|shortest|busiest|\
         rank|ranked|frequent|frequently",
    ),
    ("distinct values", "distinct|unique"),
    (
        "a comparison of groups",
        "more * than|fewer * than|less * than|at least|at most|more often|less often|more common|less common|\
         more frequent|less frequent|are there more|were there more",
    ),
];

/// The kind of aggregate that picks out a value by how it ranks: the most, the highest, the least, ...
pub const RANKING: &str = "an extreme or a ranking";

/// Whether `query` asks which value ranks first or last, or which of two occurs more (whatever else it asks too:
/// "which station accounts for the most value in total" is a total per station, then the largest).
pub fn asks_for_ranking(query: &str) -> bool {
    let words = lower_words(query);
    AGGREGATE_CUES
        .iter()
        .filter(|(kind, _)| *kind == RANKING || *kind == "a comparison of groups")
        .any(|(_, cues)| cues.split('|').any(|cue| contains_phrase(&words, cue)))
}

/// Whether `query` asks for a total or sum of something (whatever else it asks too).
pub fn asks_for_total(query: &str) -> bool {
    let words = lower_words(query);
    AGGREGATE_CUES
        .iter()
        .filter(|(kind, _)| *kind == "a total")
        .any(|(_, cues)| cues.split('|').any(|cue| contains_phrase(&words, cue)))
}

/// Whether `query` asks for a value by how it ranks or compares ("Which station ...the most ...?", "Who has the
/// fewest ...?", "Are there more ... with sku mirror or with sku lamp?"), not for a number: a count, total or statistic
/// printed beside that value is not its answer.
pub fn asks_which_value(query: &str) -> bool {
    let words = lower_words(query);
    let names_a_value = ["which", "who", "whose", "whom"].iter().any(|w| contains_phrase(&words, w))
        || (words.iter().any(|w| w == "or") && comparison_words(&words));
    let asks_a_number = ["how many", "how much", "number of", "what is the total", "what is the sum"]
        .iter()
        .any(|cue| contains_phrase(&words, cue));
    names_a_value && !asks_a_number && asks_for_ranking(query)
}

fn comparison_words(words: &[String]) -> bool {
    AGGREGATE_CUES
        .iter()
        .filter(|(kind, _)| *kind == "a comparison of groups")
        .any(|(_, cues)| cues.split('|').any(|cue| contains_phrase(words, cue)))
}

fn lower_words(query: &str) -> Vec<String> {
    query.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect()
}

/// What kind of aggregate `query` asks for, with the word that says so (`("a count", "how many")`), or `None` for a
/// question that asks for something found in one place.
pub fn aggregate_cue(query: &str) -> Option<(&'static str, &'static str)> {
    let words = lower_words(query);
    AGGREGATE_CUES
        .iter()
        .find_map(|(kind, cues)| cues.split('|').find(|cue| contains_phrase(&words, cue)).map(|cue| (*kind, cue)))
}

/// Words a `*` of a cue may stand for.
const MAX_GAP: usize = 3;

/// Whether `words` contains the words of `phrase` in a row (a `*` in it: none up to [`MAX_GAP`] words).
fn contains_phrase(words: &[String], phrase: &str) -> bool {
    let wanted: Vec<&str> = phrase.split(' ').collect();
    (0..words.len()).any(|start| matches_at(&words[start..], &wanted))
}

fn matches_at(words: &[String], wanted: &[&str]) -> bool {
    match wanted.split_first() {
        None => true,
        Some((&"*", rest)) => (0..=MAX_GAP.min(words.len())).any(|gap| matches_at(&words[gap..], rest)),
        Some((want, rest)) => words.first().is_some_and(|word| word == want) && matches_at(&words[1..], rest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_are_recognised_in_many_phrasings() {
        for (query, kind) in [
            ("How many log lines have action=logout and status=error?", "a count"),
            ("Count the requests from host=db-1 that failed.", "a count"),
            ("What is the number of orders shipped to Oslo?", "a count"),
            ("What is the total latency_ms of user u1101?", "a total"),
            ("Sum the amounts paid by ACME.", "a total"),
            ("What is the average latency of search requests?", "a statistic"),
            ("Which user has the most failed logins?", "an extreme or a ranking"),
            ("Which host had the highest latency?", "an extreme or a ranking"),
            ("Which city appears least often?", "an extreme or a ranking"),
            ("How many distinct users logged in?", "a count"),
            ("List the unique error codes.", "distinct values"),
            ("Did api-1 have more errors than api-2?", "a comparison of groups"),
            ("HOW MANY rows mention Paris?", "a count"),
            ("Were there more failed logins than successful ones?", "a comparison of groups"),
            ("Are there more orders from the north or from the south?", "a comparison of groups"),
            ("Comparing the two hosts, which one fails more often?", "a comparison of groups"),
        ] {
            assert_eq!(aggregate_cue(query).map(|(k, _)| k), Some(kind), "{query}");
        }
    }

    #[test]
    fn rankings_are_recognised_whatever_else_the_question_asks() {
        for query in [
            "Over every one of the samples, which value of station accounts for the most value in total?",
            "Which outcome has the largest total took_ms?",
            "Are there more sales with sku mirror or with sku lamp?",
            "What is the most frequent priority among tickets in category access?",
        ] {
            assert!(asks_for_ranking(query), "{query}");
        }
        for query in ["What is the total amount of orders from the north?", "How many loans were lost?"] {
            assert!(!asks_for_ranking(query), "{query}");
        }
    }

    #[test]
    fn which_value_questions_are_told_from_number_questions() {
        for query in [
            "Over every one of the samples, which value of station accounts for the most value in total?",
            "Which user has the most log lines with status=timeout?",
            "Who sold the fewest lamps?",
            "Are there more sales with sku mirror or with sku lamp?",
            "Which outcome comes out highest when summing took_ms per outcome?",
        ] {
            assert!(asks_which_value(query), "{query}");
        }
        for query in [
            "How many lines does the most common user have?",
            "What is the total amount of orders from the north?",
            "Which lines mention Paris?",
            "Did api-1 have more errors than api-2?",
            "What is the largest took_ms?",
        ] {
            assert!(!asks_which_value(query), "{query}");
        }
    }

    #[test]
    fn lookups_are_not_aggregates() {
        for query in [
            "What is the special magic number for brisk-pebble mentioned in the provided text?",
            "Who wrote the report about the bridge?",
            "What is the value of key-17 and key-42?",
            "Where is the meeting?",
            "What did user u1101 do at 06:56:21?",
            // Cues are whole words: "mostly", "summary", "counter" and "topic" are not "most", "sum", "count", "top".
            "Summarize the topic of the counter-argument, mostly the first part.",
            "What does the word quorum mean in the bylaws?",
            "Find the serial number of room 898 in the text and reply with just that value.",
            "What is the phone number of the Oslo office?",
        ] {
            assert_eq!(aggregate_cue(query), None, "{query}");
        }
    }
}
