//! Prompt lookup: guessing a sequence's next tokens from its own earlier tokens, so one decode can check several.
//!
//! Code written over a REPL copies a lot of what it has seen: variable names, `context`, search words, lines of
//! printed output. When the sequence's last few tokens occurred before, the tokens that followed them then are a good
//! guess for what follows now. The guess costs no model: the scheduler decodes the guessed tokens in the same batch
//! as the real one and keeps them only as far as the model itself would have produced them.

/// The longest n-gram looked up; shorter ones are tried when it does not occur.
const LONGEST_NGRAM: usize = 3;

/// Up to `max` tokens that followed the most recent earlier occurrence of the last n tokens of `history` followed by
/// `last`, for the longest n (up to three) that occurred before. Empty when even `last` alone never occurred before.
///
/// The most recent occurrence is taken because code repeats what it wrote or read last. A guess that runs into the
/// end of the sequence continues with itself, so a pattern that repeats every few tokens is guessed in full.
pub(crate) fn propose<T: Copy + PartialEq>(history: &[T], last: T, max: usize) -> Vec<T> {
    let len = history.len() + 1;
    let at = |index: usize| if index < history.len() { history[index] } else { last };
    if max == 0 {
        return Vec::new();
    }
    for n in (1..=LONGEST_NGRAM).rev() {
        if len <= n {
            continue;
        }
        let key = len - n;
        // The key's last token is `last`, so test it first: most candidates fail there.
        let found = (0..key).rev().find(|&start| {
            at(start + n - 1) == last && (0..n - 1).all(|offset| at(start + offset) == at(key + offset))
        });
        if let Some(start) = found {
            let from = start + n;
            let mut draft: Vec<T> = Vec::with_capacity(max);
            for index in from..from + max {
                let token = if index < len { at(index) } else { draft[index - len] };
                draft.push(token);
            }
            return draft;
        }
    }
    Vec::new()
}

/// How many tokens a sequence guesses at once, adapted to how many of its guesses the model kept: a guess costs a
/// batch position whether kept or not.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DraftLength {
    current: usize,
}

impl DraftLength {
    /// Guessed at first; grows while guesses are kept in full.
    const FIRST: usize = 4;
    /// The most guessed at once: beyond this, a long guess is rarely kept to its end.
    const MAX: usize = 16;

    pub(crate) fn new() -> Self {
        Self { current: Self::FIRST }
    }

    pub(crate) fn get(self) -> usize {
        self.current
    }

    /// Records that `accepted` of `proposed` guessed tokens were kept.
    pub(crate) fn update(&mut self, proposed: usize, accepted: usize) {
        if proposed == 0 {
            return;
        }
        self.current = if accepted == proposed {
            (self.current * 2).min(Self::MAX)
        } else {
            // Next time guess one more than was kept this time: as far as the copy went, and a token beyond.
            (accepted + 1).clamp(1, Self::MAX)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn propose_str(text: &str, max: usize) -> String {
        let bytes = text.as_bytes();
        let (&last, history) = bytes.split_last().unwrap_or((&b' ', &[]));
        String::from_utf8(propose(history, last, max)).unwrap_or_default()
    }

    #[test]
    fn proposes_what_followed_the_longest_earlier_match() {
        // "bc" occurred once, followed by "dX"; the 1-gram "c" occurred later, followed by "Y", but longer wins.
        assert_eq!(propose_str("abcdX..cY..bc", 2), "dX");
        assert_eq!(propose_str("abcdX..cY..bc", 10), "dX..cY..bc");
    }

    #[test]
    fn takes_the_most_recent_occurrence() {
        assert_eq!(propose_str("xab1 xab2 xab", 1), "2");
    }

    #[test]
    fn falls_back_to_shorter_ngrams_and_to_nothing() {
        assert_eq!(propose_str("q1 zzq", 2), "1 ");
        assert_eq!(propose_str("abcdef", 4), "");
        assert_eq!(propose_str("a", 4), "");
        assert_eq!(propose_str("abab", 0), "");
    }

    #[test]
    fn a_pattern_that_repeats_continues_past_the_end() {
        assert_eq!(propose_str("xyzxyz", 7), "xyzxyzx");
        assert_eq!(propose_str("aaaa", 5), "aaaaa");
    }

    #[test]
    fn the_draft_length_grows_while_kept_and_shrinks_to_what_was_kept() {
        let mut length = DraftLength::new();
        assert_eq!(length.get(), DraftLength::FIRST);
        length.update(4, 4);
        assert_eq!(length.get(), 8);
        length.update(8, 8);
        length.update(16, 16);
        assert_eq!(length.get(), DraftLength::MAX);
        length.update(16, 2);
        assert_eq!(length.get(), 3);
        length.update(3, 0);
        assert_eq!(length.get(), 1);
        // Nothing proposed says nothing about the guesses.
        length.update(0, 0);
        assert_eq!(length.get(), 1);
    }
}
