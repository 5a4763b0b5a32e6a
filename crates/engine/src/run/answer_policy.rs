//! When a proposed answer may end a run, and what the model is told between turns: [`AnswerPolicy`].

use std::collections::{BTreeMap, BTreeSet};

use rlm_protocol::{CellError, CellOutcome};

use super::tree::Scope;
use crate::guard::{RepeatTracker, placeholder_reason};
use crate::host::collapse_whitespace;
use crate::notes::{self, CellView};
use crate::prompt::PromptProfile;
use crate::question::{aggregate_cue, asks_which_value};

/// Replies in a row that repeat their predecessor before the run stops with `LimitKind::Repetition`; each one
/// before that gets a nudge to change course.
const MAX_REPEAT_STREAK: u32 = 3;

/// How often second looks ([`Refusal::ZeroFromAbsentWord`], [`Refusal::AggregateFromSearch`]) may refuse answers in
/// one run. They refuse answers that are usually, not always, wrong: a model that gives the same answer after being
/// told why is let through, and they do not apply to the answer asked for when a limit has run out.
const MAX_SECOND_LOOKS: u32 = 2;

/// The rules one run follows to accept an answer, the evidence they rest on, repeat detection, and the nudges the
/// model gets between turns. The loop asks it; it alone knows the prompt profile.
///
/// * Standard rules (capable models): an answer needs code to have run, and may be computed and named in the same
///   turn (`FINAL_VAR`).
/// * Small rules: small models write an answer next to the code meant to find it, echo the question's key instead of
///   its value, and ask `llm_query` questions without the data. Their answer needs printed output of code that read
///   the context, seen in an earlier turn; an answer written next to new code must be in output already seen; an
///   answer from an `llm_query` that was given none of the context is refused; and every observation repeats the
///   question.
#[derive(Debug)]
pub(crate) struct AnswerPolicy {
    /// Whether any cell of this run has completed without an error.
    code_ran: bool,
    /// Whether any cell so far has read `context` (directly or through `search`).
    context_read: bool,
    /// Variables that earlier queries of a session built from the data: reading them counts as reading the data.
    data_names: Vec<String>,
    /// Whether code that read the context printed output in the current turn: evidence from the next turn on.
    evidence_this_turn: bool,
    /// Whether the model has seen printed output of code that read the context, in an earlier turn.
    seen_output: bool,
    repeats: RepeatTracker,
    rules: Rules,
}

#[derive(Debug)]
enum Rules {
    Standard,
    Small {
        /// Everything the model has been shown as output so far, lower-cased with whitespace collapsed.
        seen_text: String,
        /// Ungrounded `llm_query` answers the model has already been warned about.
        ungrounded_noted: usize,
        /// The numbers of places `search()` reported in its summary lines.
        search_counts: BTreeSet<String>,
        /// Every whole number shown in output other than those summary lines.
        other_numbers: BTreeSet<String>,
        /// Whether some code so far computed over the data itself (`lines_with`, `records`, `count_by`, `sum_by`,
        /// `context`) rather than only reading what `search()` showed.
        computed: bool,
        /// Whether a cell of the current turn called one of the helpers that match lines.
        matched_this_turn: bool,
        /// The helpers' note that a word given to them is in no line (python/repl_core.py, `_none_found`), when the
        /// latest turn that matched lines printed one: a count of 0 then rests on that word.
        absent_words: Option<String>,
        /// Answers refused by second looks so far.
        second_looks: u32,
        /// The counts and totals of rankings printed (`count_by`, `sum_by`: lines "  alpha: 367"), each with the
        /// value it belongs to.
        ranked_numbers: BTreeMap<Vec<String>, String>,
        /// The values those rankings named, lower-cased: a number among them ("2019") is a value, not a count.
        ranked_values: BTreeSet<String>,
        /// The last answer refused as [`Refusal::NumberForWhich`]: given again after the note, it stands.
        number_for_which: Option<String>,
    },
}

/// Why a proposed answer does not end the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Placeholder(&'static str),
    /// It came from an `llm_query` that was given none of the context.
    Ungrounded,
    /// No code had run (small models: no output of code that read the context had been seen).
    NoEvidence,
    /// It only repeats words of the question.
    EchoesQuestion,
    /// Written next to new code, and not in any output seen.
    Unsupported,
    /// Its number was only ever shown as how many places `search()` found: a count of places with some words, not
    /// of what the question asks.
    SearchCount,
    /// A second look: 0, when the latest lines matched came with the note that a word given is in no line.
    ZeroFromAbsentWord,
    /// A second look: the question asks for an aggregate and no code has computed over the data, only `search()`
    /// passages were read.
    AggregateFromSearch,
    /// A second look: the question asks which value ranks first (or which of two), and the answer is a count or
    /// total a ranking printed beside a value, or only numbers ("122 > 93").
    NumberForWhich,
}

impl Refusal {
    /// What the model is told, with what to do instead.
    pub fn note(self, answer: &str, query: &str) -> String {
        match self {
            Self::Placeholder(reason) => notes::placeholder_note(answer, reason),
            Self::Ungrounded => notes::ungrounded_answer_note(),
            Self::NoEvidence => notes::answer_before_evidence_note(query),
            Self::EchoesQuestion | Self::Unsupported => notes::unsupported_answer_note(),
            Self::SearchCount => notes::search_count_note(answer, query),
            // Their notes need what the policy saw: `AnswerPolicy::refusal_note` gives them.
            Self::ZeroFromAbsentWord => notes::absent_word_zero_note(answer, None),
            Self::AggregateFromSearch => notes::aggregate_from_search_note(answer, query),
            Self::NumberForWhich => notes::number_for_which_note(answer, None),
        }
    }

    /// Why, for the run's error when a limit ends on a refused answer.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Placeholder(reason) => reason,
            Self::Ungrounded => "it came from an llm_query that was given none of the context",
            Self::NoEvidence => "no code had shown it any evidence yet",
            Self::EchoesQuestion => "it only repeats words of the question",
            Self::Unsupported => "it was written next to new code and is in no output seen",
            Self::SearchCount => "its number was only shown as how many places search() found",
            Self::ZeroFromAbsentWord => "it is a count of 0 built on a word that is in no line",
            Self::AggregateFromSearch => "the question asks for an aggregate and no code computed it over all lines",
            Self::NumberForWhich => "the question asks which value, and the answer is only the number beside one",
        }
    }
}

impl AnswerPolicy {
    /// The rules for the root model's prompt profile.
    pub fn for_profile(profile: PromptProfile) -> Self {
        match profile {
            PromptProfile::Small => Self::small(),
            PromptProfile::Auto | PromptProfile::Standard => Self::standard(),
        }
    }

    pub fn standard() -> Self {
        Self::with_rules(Rules::Standard)
    }

    pub fn small() -> Self {
        Self::with_rules(Rules::Small {
            seen_text: String::new(),
            ungrounded_noted: 0,
            search_counts: BTreeSet::new(),
            other_numbers: BTreeSet::new(),
            computed: false,
            matched_this_turn: false,
            absent_words: None,
            second_looks: 0,
            ranked_numbers: BTreeMap::new(),
            ranked_values: BTreeSet::new(),
            number_for_which: None,
        })
    }

    fn with_rules(rules: Rules) -> Self {
        Self {
            code_ran: false,
            context_read: false,
            data_names: Vec::new(),
            evidence_this_turn: false,
            seen_output: false,
            repeats: RepeatTracker::default(),
            rules,
        }
    }

    /// Whether `llm_query` prompts are checked for text of the context (the run then keeps a copy of a text context;
    /// answers of prompts without any are guesses, never evidence).
    pub fn checks_grounding(&self) -> bool {
        matches!(self.rules, Rules::Small { .. })
    }

    /// Names of variables an earlier query of the session built from the data: code that reads them reads the data.
    pub fn treat_as_data(&mut self, names: Vec<String>) {
        self.data_names = names;
    }

    /// Records a reply; whether it repeats the previous one. What runs is what counts: the same code with different
    /// prose around it is still a repeat.
    pub fn observe_reply(&mut self, reply: &str, code_blocks: &[String]) -> bool {
        if code_blocks.is_empty() { self.repeats.observe(reply) } else { self.repeats.observe(&code_blocks.concat()) }
    }

    /// Records the cells a turn ran, before the answer it proposes is checked.
    pub fn observe_cells<'c>(&mut self, cells: impl IntoIterator<Item = (&'c str, &'c CellOutcome)>) {
        for (code, outcome) in cells {
            let uses_data = crate::session::uses_any(code, &self.data_names);
            self.context_read |= reads_context(code) || uses_data;
            if let Rules::Small { computed, matched_this_turn, .. } = &mut self.rules {
                // A helper's note (a word in no line) is printed also when its cell then fails.
                *matched_this_turn |= matches_lines(code);
                *computed |= outcome.error.is_none() && (computes_over_data(code) || uses_data);
            }
            if outcome.error.is_none() {
                self.code_ran = true;
                // Output is evidence once code has read the data: `SHOW_VARS()` printing "no variables" is not.
                self.evidence_this_turn |= self.context_read && !outcome.stdout.trim().is_empty();
            }
        }
    }

    /// Why `answer` cannot end the run yet; `None` when it can. `with_code`: the same reply also ran code. Counts the
    /// second looks it asks for.
    pub fn refusal(&mut self, answer: &str, query: &str, with_code: bool, scope: &Scope) -> Option<Refusal> {
        if let Some(refusal) = self.final_refusal(answer, query, with_code, scope) {
            return Some(refusal);
        }
        let Rules::Small {
            computed, absent_words, second_looks, ranked_numbers, ranked_values, number_for_which, ..
        } = &mut self.rules
        else {
            return None;
        };
        if *second_looks >= MAX_SECOND_LOOKS {
            return None;
        }
        let refusal = if absent_words.is_some() && is_zero(answer) {
            Refusal::ZeroFromAbsentWord
        } else if !*computed && aggregate_cue(query).is_some() {
            Refusal::AggregateFromSearch
        } else if asks_which_value(query)
            && number_for_which.as_deref() != Some(answer.trim())
            && names_no_value(answer, ranked_numbers, ranked_values)
        {
            *number_for_which = Some(answer.trim().to_owned());
            Refusal::NumberForWhich
        } else {
            return None;
        };
        *second_looks += 1;
        Some(refusal)
    }

    /// What the model is told about `refusal` of `answer`.
    pub fn refusal_note(&self, refusal: Refusal, answer: &str, query: &str) -> String {
        match (refusal, &self.rules) {
            (Refusal::ZeroFromAbsentWord, Rules::Small { absent_words, .. }) => {
                notes::absent_word_zero_note(answer, absent_words.as_deref())
            }
            (Refusal::NumberForWhich, Rules::Small { ranked_numbers, .. }) => {
                let numbers: Vec<String> = whole_numbers(answer).collect();
                notes::number_for_which_note(answer, ranked_numbers.get(&numbers).map(String::as_str))
            }
            _ => refusal.note(answer, query),
        }
    }

    /// Why `answer` cannot end the run, leaving out second looks: for the answer asked for when a limit has run out,
    /// after which the model cannot check anything any more.
    pub fn final_refusal(&self, answer: &str, query: &str, with_code: bool, scope: &Scope) -> Option<Refusal> {
        if let Some(reason) = placeholder_reason(answer) {
            return Some(Refusal::Placeholder(reason));
        }
        match &self.rules {
            Rules::Standard => (!self.code_ran).then_some(Refusal::NoEvidence),
            Rules::Small { seen_text, search_counts, other_numbers, .. } => {
                if scope.is_ungrounded(answer) {
                    Some(Refusal::Ungrounded)
                } else if !self.seen_output {
                    Some(Refusal::NoEvidence)
                } else if only_search_counts(answer, search_counts, other_numbers) {
                    Some(Refusal::SearchCount)
                } else if !query.to_lowercase().contains(" or ") && !adds_to(answer, query) {
                    // Small models echo the question: the key instead of its value. ("A or B?" questions excepted.)
                    Some(Refusal::EchoesQuestion)
                } else if with_code && !supported_by(answer, seen_text) {
                    // An answer next to new code is usually a guess; it stands when it is in output already seen.
                    Some(Refusal::Unsupported)
                } else {
                    None
                }
            }
        }
    }

    /// The note for a reply with neither code nor an answer.
    pub fn no_code_note(&self, query: &str) -> String {
        match self.rules {
            Rules::Standard => notes::NO_CODE_NOTE.to_owned(),
            Rules::Small { .. } => notes::small_no_code_note(query),
        }
    }

    /// Ends a turn whose cells showed `views`: their output becomes evidence for the turns after it. Adds a warning
    /// about `llm_query` prompts without context data since the last one, when the rules check that.
    pub fn end_turn<'v>(
        &mut self,
        views: impl IntoIterator<Item = &'v CellView>,
        scope: &Scope,
        notes: &mut Vec<String>,
    ) {
        self.seen_output |= std::mem::take(&mut self.evidence_this_turn);
        if let Rules::Small {
            seen_text,
            ungrounded_noted,
            search_counts,
            other_numbers,
            matched_this_turn,
            absent_words,
            ranked_numbers,
            ranked_values,
            ..
        } = &mut self.rules
        {
            let mut absent_note = None;
            for view in views {
                seen_text.push(' ');
                seen_text.push_str(&collapse_whitespace(&view.stdout).to_lowercase());
                for line in view.stdout.lines() {
                    if line.starts_with(ABSENT_WORDS_OPENING) {
                        // The line names the words (from model-written code), so it can be any size.
                        absent_note = Some(line.chars().take(600).collect::<String>());
                    }
                    if let Some((value, number)) = ranking_line(line) {
                        ranked_values.insert(value.to_lowercase());
                        ranked_numbers.entry(whole_numbers(number).collect()).or_insert_with(|| value.to_owned());
                    }
                    match search_summary_count(line) {
                        Some(count) => {
                            search_counts.insert(count);
                        }
                        None => other_numbers.extend(whole_numbers(line)),
                    }
                }
            }
            // Lines matched again without the note: whatever 0 that gave rests on words that are there.
            let matched = std::mem::take(matched_this_turn);
            if absent_note.is_some() || matched {
                *absent_words = absent_note;
            }
            let ungrounded = scope.ungrounded_count();
            if ungrounded > *ungrounded_noted {
                notes.push(notes::ungrounded_calls_note(ungrounded - *ungrounded_noted));
                *ungrounded_noted = ungrounded;
            }
        }
    }

    /// After a reply that repeated its predecessor: the nudge to do something else, or `None` when the streak is
    /// long enough to stop the run.
    /// `failure`: the error the repeated code raised again, if it did.
    pub fn repeat_nudge(&self, query: &str, had_code: bool, failure: Option<&CellError>) -> Option<String> {
        (self.repeats.streak < MAX_REPEAT_STREAK).then(|| notes::repeat_note(query, had_code, failure))
    }

    /// Appended to every observation.
    pub fn reminder(&self, query: &str) -> Option<String> {
        match self.rules {
            Rules::Standard => None,
            Rules::Small { .. } => Some(notes::question_reminder(query)),
        }
    }
}

/// The words of an answer that carry meaning, lower-cased: three or more letters, or any number.
fn answer_words(answer: &str) -> impl Iterator<Item = String> + '_ {
    answer
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| word.chars().count() >= 3 || word.chars().any(|c| c.is_ascii_digit()))
        .map(str::to_lowercase)
}

/// Whether every word of `answer` occurs in `seen` (lower-cased output).
fn supported_by(answer: &str, seen: &str) -> bool {
    let mut words = answer_words(answer).peekable();
    if words.peek().is_none() {
        // A short label ("ok") is seen only as a whole word of the output.
        let mut short = short_words(answer).peekable();
        return short.peek().is_some() && short.all(|word| short_words(seen).any(|other| other == word));
    }
    words.all(|word| seen.contains(word.as_str()))
}

/// Every word of `text`, lower-cased, however short.
fn short_words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric()).filter(|word| !word.is_empty()).map(str::to_lowercase)
}

/// Whether `answer` has a word the question does not: an answer that only restates the question's words (the key
/// instead of its value) tells nothing. A number counts as the question's only when the question has that whole
/// number: "1" is not in "How many of the 1500 lines ...?".
fn adds_to(answer: &str, query: &str) -> bool {
    let query_lower = query.to_lowercase();
    let query_numbers: Vec<&str> = query.split(|c: char| !c.is_ascii_digit()).filter(|n| !n.is_empty()).collect();
    let mut words = answer_words(answer).peekable();
    if words.peek().is_none() {
        // A short label ("ok", "no"): the question's only when it is one of its whole words ("ok" is in "took_ms").
        return short_words(answer).any(|word| !short_words(&query_lower).any(|other| other == word));
    }
    words.any(|word| {
        if word.chars().all(|c| c.is_ascii_digit()) {
            !query_numbers.contains(&word.as_str())
        } else {
            !query_lower.contains(word.as_str())
        }
    })
}

/// The opening of the summary line of a `search()` result (python/repl_core.py, `_found_summary`): "search found
/// 'words' in 77 places; ...".
const SEARCH_SUMMARY_OPENING: &str = "search found ";

/// The number of places a `search()` summary line reports, when `line` is one ("one place" is 1).
fn search_summary_count(line: &str) -> Option<String> {
    let rest = line.trim_start().strip_prefix(SEARCH_SUMMARY_OPENING)?;
    // The first " place" preceded by a number: the searched words (quoted before it) may contain "place" too.
    rest.match_indices(" place").find_map(|(index, _)| match rest[..index].rsplit(' ').next() {
        Some("one") => Some("1".to_owned()),
        Some(digits) if !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) => Some(digits.to_owned()),
        _ => None,
    })
}

/// The whole numbers in `text` (runs of digits not part of a longer word), without leading zeros.
fn whole_numbers(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty() && word.chars().all(|c| c.is_ascii_digit()))
        .map(|digits| digits.trim_start_matches('0').to_owned())
        .map(|digits| if digits.is_empty() { "0".to_owned() } else { digits })
}

/// Whether the numbers of `answer` were only ever shown as counts of `search()` places. Such an answer took the
/// count of places that contain some words for the count the question asks about (a small model's usual slip); a
/// number that also appeared in any other output (a printed `len(...)`, a value in a passage) is let through.
fn only_search_counts(answer: &str, search_counts: &BTreeSet<String>, other_numbers: &BTreeSet<String>) -> bool {
    let numbers: Vec<String> = whole_numbers(answer).collect();
    !numbers.is_empty() && numbers.iter().all(|n| search_counts.contains(n) && !other_numbers.contains(n))
}

/// Whether code reads the data: names `context` or calls one of the helpers over it.
fn reads_context(code: &str) -> bool {
    code.contains("context") || code.contains("search(") || matches_lines(code)
}

/// The REPL helpers that match lines of `context` (python/repl_core.py) and print [`ABSENT_WORDS_OPENING`] when a
/// word given to them is in no line.
const LINE_HELPERS: [&str; 4] = ["lines_with(", "records(", "count_by(", "sum_by("];

/// Whether code calls a helper that matches lines.
fn matches_lines(code: &str) -> bool {
    LINE_HELPERS.iter().any(|name| code.contains(name))
}

/// Whether code computes over the data itself, not only over what `search()` showed: it matches lines or uses
/// `context` directly.
fn computes_over_data(code: &str) -> bool {
    matches_lines(code) || code.contains("context")
}

/// The opening of the helpers' note that a word given to them is in no line of `context` (python/repl_core.py,
/// `ABSENT_WORDS_OPENING`).
const ABSENT_WORDS_OPENING: &str = "Not in any line of context: ";

/// A line of a printed ranking (python/repl_core.py, `_Groups`): "  alpha: 367" gives `("alpha", "367")`.
fn ranking_line(line: &str) -> Option<(&str, &str)> {
    let (value, number) = line.strip_prefix("  ")?.rsplit_once(": ")?;
    let value = value.trim();
    let is_number = number.parse::<f64>().is_ok_and(f64::is_finite);
    (is_number && !value.is_empty() && value.chars().count() <= 200).then_some((value, number))
}

/// Whether `answer` gives numbers where a value was asked for: a number a ranking printed as some value's count or
/// total, or numbers with nothing else ("122 > 93", "122 and 93"). One number that no ranking printed may be the
/// value itself (a year), and so may a number the ranking named as a value.
fn names_no_value(
    answer: &str,
    ranked_numbers: &BTreeMap<Vec<String>, String>,
    ranked_values: &BTreeSet<String>,
) -> bool {
    let numbers: Vec<String> = whole_numbers(answer).collect();
    if numbers.is_empty()
        || answer.chars().any(char::is_alphabetic)
        || ranked_values.contains(&answer.trim().to_lowercase())
    {
        return false;
    }
    ranked_numbers.contains_key(&numbers) || numbers.len() >= 2
}

/// Whether `answer` is a count of nothing: it has numbers and all of them are 0 ("0", "0.0", "There are 0.").
fn is_zero(answer: &str) -> bool {
    let mut numbers = whole_numbers(answer).peekable();
    numbers.peek().is_some() && numbers.all(|n| n == "0")
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUERY: &str = "What is the special magic number for brisk-pebble mentioned in the provided text?";

    fn ran(stdout: &str) -> CellOutcome {
        CellOutcome { stdout: stdout.to_owned(), ..CellOutcome::default() }
    }

    fn view(stdout: &str) -> CellView {
        notes::view_cell(&ran(stdout), 10_000)
    }

    /// A policy after one turn that ran `code`, which printed `stdout`.
    fn after_turn(mut policy: AnswerPolicy, code: &str, stdout: &str, scope: &Scope) -> AnswerPolicy {
        let outcome = ran(stdout);
        policy.observe_cells([(code, &outcome)]);
        policy.end_turn([&view(stdout)], scope, &mut Vec::new());
        policy
    }

    #[test]
    fn answers_are_supported_only_by_output_that_contains_them() {
        let seen = " 1 match(es) for 'olive-orchard': one of the special magic numbers for olive-orchard is: 5313471.";
        assert!(supported_by("5313471", seen));
        assert!(supported_by("The special magic number is 5313471.", seen));
        assert!(!supported_by("hollow-valley mentioned in the provided text is 123.", seen));
        assert!(!supported_by("42", seen));
        assert!(!supported_by("", seen));
        assert!(!adds_to(" brisk-pebble", QUERY));
        assert!(adds_to("4473224", QUERY));
        assert!(adds_to("The special magic number is 4473224.", QUERY));
        assert!(
            reads_context("print(search(\"x\"))") && reads_context("len(context)") && !reads_context("SHOW_VARS()")
        );
        assert!(reads_context("print(len(lines_with('a', 'b')))") && reads_context("rows = records('a')"));
    }

    #[test]
    fn a_short_label_is_an_answer_unless_it_is_a_whole_word_of_the_question() {
        let query = "Summing took_ms per outcome across the log lines, which outcome comes out highest?";
        assert!(adds_to("ok", query), "\"ok\" is inside took_ms, not a word of the question");
        assert!(adds_to(" OK ", query) && adds_to("no", "Is it late?"));
        assert!(!adds_to("per", query) && !adds_to("", query) && !adds_to("...", query));
        let seen = " highest total of took_ms: ok (30879).";
        assert!(supported_by("ok", seen) && !supported_by("no", seen) && !supported_by("to", seen));
        // Refused before as only repeating the question: the label answer of a ranking printed by code.
        let scope = Scope::top_level();
        let mut policy = small_after("print(sum_by('outcome', 'took_ms'))", seen, &scope);
        assert_eq!(policy.refusal("ok", query, false, &scope), None);
    }

    #[test]
    fn a_number_inside_a_larger_number_of_the_question_is_not_a_question_word() {
        let query = "Among the 1500 log lines, how many have action=logout and status=error?";
        assert!(adds_to("1", query));
        assert!(adds_to("15", query));
        assert!(!adds_to("1500", query), "the question's own number only repeats it");
        assert!(!adds_to("logout error", query));
    }

    #[test]
    fn placeholders_are_refused_by_both_rules() {
        let scope = Scope::top_level();
        for policy in [AnswerPolicy::standard(), AnswerPolicy::small()] {
            let mut policy = after_turn(policy, "print(context[:100])", "the text", &scope);
            assert!(matches!(policy.refusal("your answer", QUERY, false, &scope), Some(Refusal::Placeholder(_))));
        }
    }

    #[test]
    fn standard_rules_need_code_to_have_run_and_accept_an_answer_computed_in_the_same_turn() {
        let scope = Scope::top_level();
        let mut policy = AnswerPolicy::standard();
        assert_eq!(policy.refusal("4473224", QUERY, false, &scope), Some(Refusal::NoEvidence));
        // A cell that failed is no evidence.
        let error =
            rlm_protocol::CellError { kind: "ValueError".into(), message: "x".into(), traceback: String::new() };
        let failed = CellOutcome { error: Some(error), ..CellOutcome::default() };
        policy.observe_cells([("x = context.split()", &failed)]);
        assert_eq!(policy.refusal("4473224", QUERY, true, &scope), Some(Refusal::NoEvidence));
        let outcome = ran("");
        policy.observe_cells([("answer = compute()", &outcome)]);
        assert_eq!(policy.refusal("4473224", QUERY, true, &scope), None, "FINAL_VAR next to its code is fine");
        // The small rules' checks do not apply: echoing the question is the model's own business here.
        assert_eq!(policy.refusal("brisk-pebble", QUERY, true, &scope), None);
    }

    #[test]
    fn small_rules_need_output_of_code_that_read_the_context_in_an_earlier_turn() {
        let scope = Scope::top_level();
        let mut policy = AnswerPolicy::small();
        let outcome = ran("brisk-pebble: 4473224");
        policy.observe_cells([("print(search('brisk-pebble'))", &outcome)]);
        assert_eq!(
            policy.refusal("4473224", QUERY, true, &scope),
            Some(Refusal::NoEvidence),
            "output of this same turn is not evidence yet"
        );
        policy.end_turn([&view("brisk-pebble: 4473224")], &scope, &mut Vec::new());
        assert_eq!(policy.refusal("4473224", QUERY, false, &scope), None);

        let mut code_without_the_data = after_turn(AnswerPolicy::small(), "SHOW_VARS()", "no variables", &scope);
        assert_eq!(code_without_the_data.refusal("4473224", QUERY, false, &scope), Some(Refusal::NoEvidence));
    }

    #[test]
    fn small_rules_refuse_echoes_of_the_question_except_for_choices() {
        let scope = Scope::top_level();
        let mut policy = after_turn(AnswerPolicy::small(), "print(search('pebble'))", "brisk-pebble 4473224", &scope);
        assert_eq!(policy.refusal("brisk-pebble", QUERY, false, &scope), Some(Refusal::EchoesQuestion));
        let choice = "Is the special number for brisk-pebble odd or even?";
        assert_eq!(policy.refusal("brisk-pebble", choice, false, &scope), None);
    }

    #[test]
    fn small_rules_refuse_an_answer_next_to_new_code_unless_it_was_seen() {
        let scope = Scope::top_level();
        let mut policy = after_turn(AnswerPolicy::small(), "print(search('pebble'))", "brisk-pebble 4473224", &scope);
        assert_eq!(policy.refusal("5313471", QUERY, true, &scope), Some(Refusal::Unsupported));
        assert_eq!(policy.refusal("4473224", QUERY, true, &scope), None);
        assert_eq!(policy.refusal("5313471", QUERY, false, &scope), None, "without new code it stands");
    }

    #[test]
    fn small_rules_refuse_a_count_of_search_places_until_code_has_shown_the_number() {
        const COUNT: &str = "How many log lines have action=logout and status=error?";
        let scope = Scope::top_level();
        let searched = "search found 'action=logout' in 77 places; only the first 10 are shown below. That number \
                        counts places with these words, not what the question asks.\n\
                        2026-03-14T06:56:21Z host=api-1 user=u1101 action=logout status=error latency_ms=87\n---\n\
                        2026-03-14T06:58:02Z host=web-1 user=u1120 action=logout status=ok latency_ms=412";
        let mut policy = after_turn(AnswerPolicy::small(), "print(search('action=logout'))", searched, &scope);
        assert_eq!(policy.refusal("77", COUNT, false, &scope), Some(Refusal::SearchCount));
        assert_eq!(policy.refusal("There are 77 such lines.", COUNT, false, &scope), Some(Refusal::SearchCount));
        let note = Refusal::SearchCount.note("77", COUNT);
        assert!(note.contains("lines_with(\"action=logout\", \"status=error\")"), "{note}");
        // A number shown elsewhere too (here, a value in a passage) may be what the question asks for; only the
        // second look at an aggregate read from passages asks about it.
        assert_eq!(policy.refusal("87", COUNT, false, &scope), Some(Refusal::AggregateFromSearch));
        // Once code has printed the number, it is evidence.
        let mut counted = after_turn(policy, "print(len(lines_with('action=logout')))", "77", &scope);
        assert_eq!(counted.refusal("77", COUNT, false, &scope), None);
        // "one place" counts as 1.
        let mut one =
            after_turn(AnswerPolicy::small(), "print(search('x'))", "search found 'x' in one place:\nx y", &scope);
        assert_eq!(one.refusal("1", COUNT, false, &scope), Some(Refusal::SearchCount));
        // The standard rules leave it to the model.
        let mut standard = after_turn(AnswerPolicy::standard(), "print(search('action=logout'))", searched, &scope);
        assert_eq!(standard.refusal("77", COUNT, false, &scope), None);
    }

    /// A small policy after one turn whose cell ran `code` and printed `stdout`, for `query`-independent checks.
    fn small_after(code: &str, stdout: &str, scope: &Scope) -> AnswerPolicy {
        after_turn(AnswerPolicy::small(), code, stdout, scope)
    }

    #[test]
    fn a_zero_built_on_a_word_in_no_line_gets_a_second_look() {
        const COUNT: &str = "How many loan records have return_status lost?";
        let scope = Scope::top_level();
        let absent = "Not in any line of context: 'loan records'. So lines_with('loan records', 'return_status', \
                      'lost') finds nothing; that says nothing about the question. Without 'loan records': 28 lines \
                      with 'return_status', 'lost': lines_with('return_status', 'lost').\n0";
        let code = "print(len(lines_with('loan records', 'return_status', 'lost')))";
        let mut policy = small_after(code, absent, &scope);
        assert_eq!(policy.refusal("0", COUNT, false, &scope), Some(Refusal::ZeroFromAbsentWord));
        let note = policy.refusal_note(Refusal::ZeroFromAbsentWord, "0", COUNT);
        assert!(note.contains("Without 'loan records': 28 lines"), "the helper's count is quoted: {note}");
        assert!(note.contains("FINAL(0) again"), "a real 0 stays answerable: {note}");
        // Other numbers are not touched; a model that insists is let through after the second look.
        assert_eq!(policy.refusal("28", COUNT, false, &scope), None);
        assert_eq!(policy.refusal("0", COUNT, false, &scope), Some(Refusal::ZeroFromAbsentWord));
        assert_eq!(policy.refusal("0", COUNT, false, &scope), None, "at most {MAX_SECOND_LOOKS} second looks");
        // At a limit no second look applies: the model cannot check any more.
        let fresh = small_after(code, absent, &scope);
        assert_eq!(fresh.final_refusal("0", COUNT, false, &scope), None);

        // Matching lines again without the note clears it: that 0 rests on words that are in the lines.
        let mut recounted =
            after_turn(small_after(code, absent, &scope), "print(len(lines_with('a', 'b')))", "0", &scope);
        assert_eq!(recounted.refusal("0", COUNT, false, &scope), None);
        // Code that matches no lines (a search) keeps the note in force.
        let mut searched = after_turn(
            small_after(code, absent, &scope),
            "print(search('lost'))",
            "search found 'lost' in 3 places:\nx",
            &scope,
        );
        assert_eq!(searched.refusal("0", COUNT, false, &scope), Some(Refusal::ZeroFromAbsentWord));
        // A genuine 0 (every word is in some line, never together) has no note and is accepted at once.
        let none = "No line contains all of: 'return_status', 'lost'. Each of them is in some line, but no line has \
                    all of them.\n0";
        let mut genuine = small_after("print(lines_with('return_status', 'lost'), len(lines_with('x')))", none, &scope);
        assert_eq!(genuine.refusal("0", COUNT, false, &scope), None);
        assert!(is_zero("0") && is_zero("There are 0.0 of them") && !is_zero("0.5") && !is_zero("none"));
        // The standard rules leave it to the model.
        let mut standard = after_turn(AnswerPolicy::standard(), code, absent, &scope);
        assert_eq!(standard.refusal("0", COUNT, false, &scope), None);
    }

    #[test]
    fn an_aggregate_read_from_search_passages_gets_a_second_look() {
        const RANKING: &str = "Which station accounts for the most value in total?";
        let scope = Scope::top_level();
        let passages = "search found 'station' in 400 places; only the first 10 are shown below.\n\
                        {\"value\": 111, \"station\": \"alpha\"}";
        let mut searched = small_after("print(search('station'))", passages, &scope);
        assert_eq!(searched.refusal("111", RANKING, false, &scope), Some(Refusal::AggregateFromSearch));
        let note = searched.refusal_note(Refusal::AggregateFromSearch, "111", RANKING);
        assert!(note.contains("sum_by(") && note.contains("count_by("), "{note}");
        let count_note = Refusal::AggregateFromSearch.note("5", "How many lines have status=error and host=api-1?");
        assert!(
            count_note.contains(r#"print(len(lines_with("#) && count_note.contains(r#""host=api-1""#),
            "{count_note}"
        );
        // A lookup is not an aggregate: what search shows may be its answer.
        let mut lookup = small_after("print(search('brisk-pebble'))", "brisk-pebble: 4473224", &scope);
        assert_eq!(lookup.refusal("4473224", QUERY, false, &scope), None);
        // Code over the data (a helper, or `context` itself) has computed it.
        for code in ["print(sum_by('station', 'value'))", "print(len([l for l in context.splitlines() if 'x' in l]))"] {
            let mut computed =
                after_turn(small_after("print(search('station'))", passages, &scope), code, "alpha: 5", &scope);
            assert_eq!(computed.refusal("alpha", RANKING, false, &scope), None, "{code}");
        }
        // A failed cell computed nothing.
        let mut policy = small_after("print(search('station'))", passages, &scope);
        let error = CellError { kind: "TypeError".into(), message: "x".into(), traceback: String::new() };
        let failed = CellOutcome { error: Some(error), ..CellOutcome::default() };
        policy.observe_cells([("print(max(records('station')))", &failed)]);
        policy.end_turn([&view("")], &scope, &mut Vec::new());
        assert_eq!(policy.refusal("alpha", RANKING, false, &scope), Some(Refusal::AggregateFromSearch));
        // Second looks are asked for at most twice a run, then the answer stands.
        assert_eq!(policy.refusal("alpha", RANKING, false, &scope), Some(Refusal::AggregateFromSearch));
        assert_eq!(policy.refusal("alpha", RANKING, false, &scope), None);
    }

    #[test]
    fn a_count_given_for_which_value_gets_a_second_look() {
        const WHICH: &str =
            "Over every one of the samples, which value of station accounts for the most value in total?";
        let scope = Scope::top_level();
        let ranking = "Total value per station of the 900 records, largest first:\n  alpha: 367\n  2019: 120\n  \
                       gamma: 93\nLeast: gamma (93).\nMost: alpha (367).";
        let code = "print(sum_by('station', 'value'))";
        let mut policy = small_after(code, ranking, &scope);
        assert_eq!(policy.refusal("367", WHICH, false, &scope), Some(Refusal::NumberForWhich));
        let note = policy.refusal_note(Refusal::NumberForWhich, "367", WHICH);
        assert!(note.contains("beside alpha") && note.contains("FINAL(alpha)"), "{note}");
        // Given again after the note, it stands; the value itself is accepted at once.
        assert_eq!(policy.refusal("367", WHICH, false, &scope), None);
        let mut fresh = small_after(code, ranking, &scope);
        assert_eq!(fresh.refusal("alpha", WHICH, false, &scope), None);
        // A number that the ranking names as a value is a value.
        assert_eq!(fresh.refusal("2019", WHICH, false, &scope), None);
        // Two numbers in place of a choice; one number no ranking printed may be the value (a year).
        const CHOICE: &str = "Are there more sales with sku mirror or with sku lamp?";
        let mut counted = small_after("print(len(lines_with('mirror')), len(lines_with('lamp')))", "122 93", &scope);
        assert_eq!(counted.refusal("122 > 93", CHOICE, false, &scope), Some(Refusal::NumberForWhich));
        assert!(counted.refusal_note(Refusal::NumberForWhich, "122 > 93", CHOICE).contains("not the numbers"));
        assert_eq!(counted.refusal("1998", WHICH, false, &scope), None);
        // A question that asks for a number takes one; the standard rules leave it to the model.
        assert_eq!(fresh.refusal("367", "How many records does the most common station have?", false, &scope), None);
        let mut standard = after_turn(AnswerPolicy::standard(), code, ranking, &scope);
        assert_eq!(standard.refusal("367", WHICH, false, &scope), None);
        assert_eq!(ranking_line("  alpha: 367"), Some(("alpha", "367")));
        assert_eq!(ranking_line("alpha: 367"), None);
        assert_eq!(ranking_line("  note: see below"), None);
    }

    #[test]
    fn search_summaries_and_whole_numbers_are_read_from_output() {
        assert_eq!(search_summary_count("search found 'a b' in 12 places; only the first 10"), Some("12".into()));
        assert_eq!(search_summary_count("search found 'x' inside longer words in 3 places:"), Some("3".into()));
        assert_eq!(search_summary_count("search found 'x' in one place:"), Some("1".into()));
        assert_eq!(search_summary_count("search found 'camp places' in 4 places:"), Some("4".into()));
        assert_eq!(search_summary_count("the search found 12 places"), None);
        assert_eq!(search_summary_count("12 lines with 'x':"), None);
        let numbers: Vec<String> = whole_numbers("latency_ms=087 at 06:56:21Z, u1101 and 0").collect();
        assert_eq!(numbers, ["87", "6", "56", "0"]);
    }

    #[test]
    fn small_rules_refuse_and_warn_about_llm_query_guesses() {
        let scope = Scope::top_level();
        let mut policy = after_turn(AnswerPolicy::small(), "print(context[:50])", "some text", &scope);
        scope.record_ungrounded("The number is 9999999.");
        assert_eq!(policy.refusal("9999999", QUERY, false, &scope), Some(Refusal::Ungrounded));
        assert_eq!(policy.refusal("The number is 9999999.", QUERY, false, &scope), Some(Refusal::Ungrounded));
        assert_eq!(policy.refusal("4473224", QUERY, false, &scope), None);
        let mut notes = Vec::new();
        policy.end_turn([], &scope, &mut notes);
        assert_eq!(notes.len(), 1, "{notes:?}");
        notes.clear();
        policy.end_turn([], &scope, &mut notes);
        assert!(notes.is_empty(), "warned once per guess");

        let mut standard = AnswerPolicy::standard();
        assert!(!standard.checks_grounding() && AnswerPolicy::small().checks_grounding());
        standard.end_turn([], &scope, &mut notes);
        assert!(notes.is_empty());
    }

    #[test]
    fn repeats_get_nudges_until_the_streak_stops_the_run() {
        let mut policy = AnswerPolicy::standard();
        let code = vec!["print(1)".to_owned()];
        assert!(!policy.observe_reply("first", &code));
        assert!(policy.observe_reply("same code, other words", &code));
        for _ in 1..MAX_REPEAT_STREAK {
            assert!(policy.repeat_nudge(QUERY, true, None).is_some());
            assert!(policy.observe_reply("again", &code));
        }
        assert_eq!(policy.repeat_nudge(QUERY, true, None), None);
        assert!(!policy.observe_reply("new", &["print(2)".to_owned()]));
    }

    #[test]
    fn a_repeated_failure_is_named_with_its_error_capped() {
        let mut policy = AnswerPolicy::small();
        let code = vec!["print(max(records('a')))".to_owned()];
        policy.observe_reply("first", &code);
        assert!(policy.observe_reply("again", &code));
        let error = CellError {
            kind: "TypeError".to_owned(),
            message: format!("'>' not supported between instances of 'dict' and 'dict'{}", "x".repeat(10_000)),
            traceback: String::new(),
        };
        let nudge = policy.repeat_nudge(QUERY, true, Some(&error)).unwrap();
        assert!(nudge.contains("failed again with the same error: TypeError: '>' not supported"), "{nudge}");
        assert!(nudge.len() < 1_000, "the guest's message is capped: {} bytes", nudge.len());
        let plain = policy.repeat_nudge(QUERY, true, None).unwrap();
        assert!(plain.contains("same output") || plain.contains("same as before"), "{plain}");
    }

    #[test]
    fn nudges_follow_the_rules() {
        let (standard, small) = (AnswerPolicy::standard(), AnswerPolicy::small());
        assert_eq!(standard.reminder(QUERY), None);
        assert!(small.reminder(QUERY).is_some_and(|text| text.contains(QUERY)));
        assert_eq!(standard.no_code_note(QUERY), notes::NO_CODE_NOTE);
        assert!(small.no_code_note(QUERY).contains("search("));
        assert_eq!(AnswerPolicy::for_profile(PromptProfile::Small).reminder(QUERY), small.reminder(QUERY));
        assert_eq!(AnswerPolicy::for_profile(PromptProfile::Auto).reminder(QUERY), None);
    }
}
