//! Prompt lookup: guessing a sequence's next tokens from its own earlier tokens, so one decode can check several.
//!
//! Code written over a REPL copies a lot of what it has seen: variable names, `context`, search words, lines of
//! printed output. When the sequence's last few tokens occurred before, the tokens that followed them then are a good
//! guess for what follows now. The guess costs no model: the scheduler decodes the guessed tokens in the same batch
//! as the real one and keeps them only as far as the model itself would have produced them.

/// The longest n-gram looked up; shorter ones are tried when it does not occur.
const LONGEST_NGRAM: usize = 3;

/// A guess: the tokens that followed an earlier occurrence of the sequence's last `ngram` tokens.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Guess<T> {
    pub(crate) tokens: Vec<T>,
    /// How many of the sequence's last tokens matched (1 to 3): longer matches are kept more often.
    pub(crate) ngram: usize,
}

/// Up to `max` tokens that followed the most recent earlier occurrence of the last n tokens of `history` followed by
/// `last`, for the longest n (up to three) that occurred before. `None` when even `last` alone never occurred
/// before.
///
/// The most recent occurrence is taken because code repeats what it wrote or read last. A guess that runs into the
/// end of the sequence continues with itself, so a pattern that repeats every few tokens is guessed in full.
pub(crate) fn propose<T: Copy + PartialEq>(history: &[T], last: T, max: usize) -> Option<Guess<T>> {
    let len = history.len() + 1;
    let at = |index: usize| if index < history.len() { history[index] } else { last };
    if max == 0 {
        return None;
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
            let mut tokens: Vec<T> = Vec::with_capacity(max);
            for index in from..from + max {
                let token = if index < len { at(index) } else { tokens[index - len] };
                tokens.push(token);
            }
            return Some(Guess { tokens, ngram: n });
        }
    }
    None
}

/// How many guessed tokens are worth decoding, learnt from how often guesses were kept.
///
/// A guessed token is not free: on a CPU a decode of two tokens cost 1.7 times one, of five 2.6 times, of seventeen
/// 6 times (Qwen2.5-Coder-1.5B Q4_K_M, one thread; the `speed` example's `batch` mode). The k-th guess of a step is
/// kept only if the k-1 before it were, with probability about `rate^k` where `rate` is the share of guessed tokens
/// kept when tried; it is worth its cost while that exceeds the cost (by default [`DEFAULT_GUESS_COST`]). The rate is learnt per match length
/// (guesses after a three-token match are kept far more often than after one token), over all sequences.
#[derive(Debug, Clone)]
pub(crate) struct Acceptance {
    /// A guessed token's cost in decodes of one token.
    cost: f64,
    rate: [f64; LONGEST_NGRAM],
    /// Chances to guess passed up since the last guess: one is taken now and then to keep the rates current.
    idle: u32,
}

/// A guessed token's cost in decodes of one token. The measurements above give 0.7 for the first and about 0.4 for
/// each further one at a load average of 12; at a load average of 5, guessing at a cost of 0.5 made an RLM turn 0.82
/// times as fast per CPU second, so guesses are made only when they are kept four times in five.
pub const DEFAULT_GUESS_COST: f64 = 0.8;
/// Weight of the latest tried guess in the rate.
const LEARNING_RATE: f64 = 1.0 / 16.0;
/// When guessing does not pay, one token is guessed every this many chances, to notice when it starts to.
const PROBE_EVERY: u32 = 16;
/// The most tokens guessed at once.
pub(crate) const MAX_GUESS: usize = 16;

impl Acceptance {
    /// `cost`: a guessed token's cost in decodes of one token.
    pub(crate) fn new(cost: f64) -> Self {
        // Before anything is known, longer matches are thought likelier to be kept; at the default cost none is
        // guessed until probes or a copy in progress show that guesses are kept.
        Self { cost: cost.max(0.0), rate: [0.5, 0.65, 0.75], idle: 0 }
    }

    /// Guessed tokens worth decoding after a match of `ngram` tokens; `streak` is how many the sequence guessed and
    /// kept in full at its last step (a copy in progress goes on more often than the rate says).
    pub(crate) fn length(&mut self, ngram: usize, streak: usize) -> usize {
        let index = ngram.clamp(1, LONGEST_NGRAM) - 1;
        let rate = self.rate[index];
        let mut worth = 0;
        let mut kept = rate;
        while kept > self.cost && worth < MAX_GUESS {
            worth += 1;
            kept *= rate;
        }
        let length = worth.max((streak * 2).min(MAX_GUESS));
        if length > 0 {
            self.idle = 0;
            return length;
        }
        self.idle += 1;
        if self.idle >= PROBE_EVERY {
            self.idle = 0;
            return 1;
        }
        0
    }

    /// Records that `accepted` of `proposed` tokens guessed after a match of `ngram` tokens were kept.
    pub(crate) fn record(&mut self, ngram: usize, proposed: usize, accepted: usize) {
        let rate = &mut self.rate[ngram.clamp(1, LONGEST_NGRAM) - 1];
        // Each guess is tried only if those before it were kept: the kept ones and the first one dropped.
        for _ in 0..accepted {
            *rate += LEARNING_RATE * (1.0 - *rate);
        }
        if accepted < proposed {
            *rate -= LEARNING_RATE * *rate;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn propose_str(text: &str, max: usize) -> String {
        let bytes = text.as_bytes();
        let (&last, history) = bytes.split_last().unwrap_or((&b' ', &[]));
        propose(history, last, max).map(|guess| String::from_utf8(guess.tokens).unwrap_or_default()).unwrap_or_default()
    }

    #[test]
    fn proposes_what_followed_the_longest_earlier_match() {
        // "bc" occurred once, followed by "dX"; the 1-gram "c" occurred later, followed by "Y", but longer wins.
        assert_eq!(propose_str("abcdX..cY..bc", 2), "dX");
        assert_eq!(propose_str("abcdX..cY..bc", 10), "dX..cY..bc");
        assert_eq!(propose(b"abcdX..cY..b", b'c', 2).map(|guess| guess.ngram), Some(2));
    }

    #[test]
    fn takes_the_most_recent_occurrence() {
        assert_eq!(propose_str("xab1 xab2 xab", 1), "2");
    }

    #[test]
    fn falls_back_to_shorter_ngrams_and_to_nothing() {
        assert_eq!(propose_str("q1 zzq", 2), "1 ");
        assert_eq!(propose(b"q1 zz", b'q', 2).map(|guess| guess.ngram), Some(1));
        assert_eq!(propose(b"abcde", b'f', 4), None);
        assert_eq!(propose(b"", b'a', 4), None);
        assert_eq!(propose(b"aba", b'b', 0), None);
    }

    #[test]
    fn a_pattern_that_repeats_continues_past_the_end() {
        assert_eq!(propose_str("xyzxyz", 7), "xyzxyzx");
        assert_eq!(propose_str("aaaa", 5), "aaaaa");
    }

    #[test]
    fn guesses_grow_with_the_rate_they_are_kept_at_and_stop_when_it_is_low() {
        let mut acceptance = Acceptance::new(0.5);
        assert_eq!((acceptance.length(3, 0), acceptance.length(2, 0), acceptance.length(1, 0)), (2, 1, 0));
        let mut cautious = Acceptance::new(DEFAULT_GUESS_COST);
        assert_eq!((cautious.length(3, 0), cautious.length(3, 2)), (0, 4));
        // Kept in full again and again: long guesses pay.
        for _ in 0..40 {
            acceptance.record(3, 4, 4);
        }
        assert_eq!(acceptance.length(3, 0), MAX_GUESS);
        // Dropped at once again and again: no guesses, but for a probe every few chances.
        for _ in 0..40 {
            acceptance.record(2, 1, 0);
        }
        let lengths: Vec<usize> = (0..PROBE_EVERY * 2).map(|_| acceptance.length(2, 0)).collect();
        assert_eq!(lengths.iter().sum::<usize>(), 2, "{lengths:?}");
        assert_eq!(lengths.iter().max(), Some(&1));
        // A copy in progress goes on whatever the rate.
        assert_eq!(acceptance.length(2, 3), 6);
        assert_eq!(acceptance.length(2, 12), MAX_GUESS);
    }

    #[test]
    fn free_guesses_are_always_made_in_full() {
        let mut acceptance = Acceptance::new(0.0);
        for _ in 0..40 {
            acceptance.record(1, 1, 0);
        }
        assert_eq!(acceptance.length(1, 0), MAX_GUESS);
    }

    #[test]
    fn a_rate_learns_from_every_guess_tried() {
        let mut acceptance = Acceptance::new(DEFAULT_GUESS_COST);
        let before = acceptance.rate[0];
        acceptance.record(1, 3, 3);
        assert!(acceptance.rate[0] > before);
        let after_kept = acceptance.rate[0];
        acceptance.record(1, 3, 0);
        assert!(acceptance.rate[0] < after_kept);
        // Nothing guessed, nothing learnt.
        let unchanged = acceptance.rate[0];
        acceptance.record(1, 0, 0);
        assert!((acceptance.rate[0] - unchanged).abs() < 1e-12);
    }
}
