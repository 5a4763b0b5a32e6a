//! What the needle families share: filler with statements scattered through it, keys that look alike, and values of
//! several shapes.

use crate::records::pick;
use crate::sniah::{self, Filler};

/// `needles` at random depths (in their order) in filler of one kind, cut to about `size` characters.
pub(crate) fn scatter(size: usize, needles: &[String], filler: Filler, rng: &mut fastrand::Rng) -> String {
    let needle_chars: usize = needles.iter().map(|n| n.len() + 2).sum();
    let filler_chars = size.saturating_sub(needle_chars);
    let mut depths: Vec<f64> = needles.iter().map(|_| rng.f64()).collect();
    depths.sort_by(f64::total_cmp);
    let mut text = String::with_capacity(size + 256);
    let mut filled = 0;
    let mut last_needle_end = 0;
    for (needle, depth) in needles.iter().zip(depths) {
        let mut segment = String::new();
        sniah::fill(&mut segment, ((filler_chars as f64 * depth) as usize).saturating_sub(filled), filler, rng);
        filled += segment.len();
        text.push_str(&segment);
        // Statements that are not sentences (`key: attr = value`, JSON) stand on their own lines.
        let own_line = filler == Filler::Log || !needle.ends_with('.');
        if own_line && !(text.is_empty() || text.ends_with('\n')) {
            text.push('\n');
        } else if !(text.is_empty() || text.ends_with('\n') || text.ends_with(' ')) {
            text.push(' ');
        }
        text.push_str(needle);
        text.push(if own_line { '\n' } else { ' ' });
        last_needle_end = text.len();
    }
    let mut rest = String::new();
    sniah::fill(&mut rest, filler_chars.saturating_sub(filled), filler, rng);
    text.push_str(&rest);
    if text.len() > size {
        let cut = text[..size].rfind(['.', '\n']).map_or(size, |i| i + 1).max(last_needle_end);
        text.truncate(cut);
    }
    text
}

/// The shapes values take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ValueShape {
    /// `4829301`
    Digits7,
    /// `QX-4821`
    Code,
    /// `482930`
    Digits6,
    /// `amber-falcon`: no digits, so answers are matched against the candidates alone.
    Words,
}

impl ValueShape {
    pub const WITH_DIGITS: [Self; 3] = [Self::Digits7, Self::Code, Self::Digits6];
    pub const ALL: [Self; 4] = [Self::Digits7, Self::Code, Self::Digits6, Self::Words];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Digits7 => "digits7",
            Self::Code => "code",
            Self::Digits6 => "digits6",
            Self::Words => "words",
        }
    }

    /// What such a value is called.
    pub fn attributes(self) -> &'static [&'static str] {
        match self {
            Self::Digits7 => &["access code", "serial number", "account number", "tracking number"],
            Self::Code => &["reference code", "permit code", "badge code", "booking reference"],
            Self::Digits6 => &["PIN", "door code", "combination", "unlock code"],
            Self::Words => &["passphrase", "codeword", "password", "call sign"],
        }
    }

    /// A value unlike all of `taken`.
    pub fn value(self, rng: &mut fastrand::Rng, taken: &[String]) -> String {
        loop {
            let value = match self {
                Self::Digits7 => rng.u32(1_000_000..10_000_000).to_string(),
                Self::Code => format!("{}{}-{}", rng.uppercase(), rng.uppercase(), rng.u32(1000..10_000)),
                Self::Digits6 => rng.u32(100_000..1_000_000).to_string(),
                Self::Words => format!("{}-{}", pick(rng, &sniah::ADJECTIVES), pick(rng, &sniah::NOUNS)),
            };
            if !taken.contains(&value) {
                return value;
            }
        }
    }
}

/// Attributes for statements about a key that are not the one asked for.
pub(crate) const OTHER_ATTRIBUTES: [&str; 4] = ["maintenance code", "guest code", "reset code", "alarm code"];

pub(crate) const KEY_PREFIXES: [&str; 12] =
    ["vault", "locker", "gate", "crate", "project", "cabinet", "dock", "bay", "server", "safe", "unit", "room"];

/// How keys are written in one task.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyStyle {
    prefix: &'static str,
    form: usize,
}

impl KeyStyle {
    pub fn random(rng: &mut fastrand::Rng) -> Self {
        Self { prefix: *pick(rng, &KEY_PREFIXES), form: rng.usize(..4) }
    }

    pub fn key(self, number: u32) -> String {
        match self.form {
            0 => format!("{}-{number}", self.prefix),
            1 => format!("{} {number}", self.prefix),
            2 => format!("{} #{number}", self.prefix),
            _ => format!("{}_{number}", self.prefix),
        }
    }
}

/// `count` numbers that read like `number` (its digits reversed or swapped, a digit added or dropped, one more or
/// less), `number` not among them.
pub(crate) fn similar_numbers(number: u32, count: usize, rng: &mut fastrand::Rng) -> Vec<u32> {
    let digits = number.to_string();
    let mut candidates: Vec<u32> = Vec::new();
    let mut push = |n: u32| {
        if n != number && n > 0 && !candidates.contains(&n) {
            candidates.push(n);
        }
    };
    push(digits.chars().rev().collect::<String>().parse().unwrap_or(0));
    for d in 0..10 {
        push(number * 10 + d);
        push(format!("{}{digits}", d + 1).parse().unwrap_or(0));
    }
    push(number + 1);
    push(number.saturating_sub(1));
    push(number / 10);
    let bytes = digits.as_bytes();
    for i in 0..bytes.len().saturating_sub(1) {
        let mut swapped = bytes.to_vec();
        swapped.swap(i, i + 1);
        push(String::from_utf8_lossy(&swapped).parse().unwrap_or(0));
    }
    // The closest look-alikes (reversal, swaps, one more or less) stay; the rest are drawn at random.
    rng.shuffle(&mut candidates);
    candidates.truncate(count);
    candidates
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similar_numbers_are_distinct_and_never_the_number() {
        let mut rng = fastrand::Rng::with_seed(1);
        for number in [17, 170, 402, 99] {
            let similar = similar_numbers(number, 6, &mut rng);
            assert_eq!(similar.len(), 6);
            assert!(!similar.contains(&number));
            let mut unique = similar.clone();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(unique.len(), 6);
        }
    }

    #[test]
    fn scatter_keeps_every_needle_in_order_and_the_size() {
        let mut rng = fastrand::Rng::with_seed(2);
        let needles: Vec<String> = (0..5).map(|i| format!("The door code for vault-{i} is 12345{i}.")).collect();
        for filler in Filler::ALL {
            let text = scatter(20_000, &needles, filler, &mut rng);
            assert!(text.len() <= 20_100 && text.len() >= 19_000, "{filler:?}: {}", text.len());
            let positions: Vec<usize> = needles.iter().map(|n| text.find(n.as_str()).unwrap()).collect();
            assert!(positions.windows(2).all(|w| w[0] < w[1]));
        }
    }
}
