//! Refuses management API tokens that were not generated at random.
//!
//! A token that passes the length rule can still be guessable: a placeholder
//! copied from an example (`change-me-to-32-random-characters`), or a string
//! typed by hand (`aaaa…`, `0123456789…`, `passwordpassword…`). Each check
//! below refuses one such shape. The bounds are set so that a token drawn at
//! random (hex, base64 or a UUID of at least `MIN_TOKEN_LEN` characters) is
//! refused with a probability well below one in a million, while the shapes
//! people type are caught.

/// How to make a token that passes, for the errors that refuse one.
pub(super) const GENERATE_TOKEN: &str = "generate one with `openssl rand -hex 32`";

/// Words that mark a value as something to be replaced. Compared with the
/// token lower-cased and stripped of `-`, `_`, `.` and spaces, so
/// `CHANGE_ME` and `change-me` are both found. None is made of hex digits,
/// so no hex token can contain one.
const PLACEHOLDERS: &[&str] = &[
    "changeme",
    "placeholder",
    "example",
    "replace",
    "secrethere",
    "tokenhere",
    "yourtoken",
    "insert",
    "dummy",
    "sample",
    "fixme",
    "xxxx",
];

/// The longest run of one character, or of consecutive characters (`abcd…`,
/// `9876…`), a token may contain. A random hex token of 64 characters has a
/// run of 8 with a probability of about 4 in 10 million.
const MAX_RUN: usize = 7;

/// The fewest distinct characters a token must use. In a million draws of
/// 24 random hex characters (the shortest accepted token) the fewest seen
/// was 6; hand-made strings (`aabbaabb…`, `1212…`) use fewer.
const MIN_DISTINCT: usize = 6;

/// The least Shannon entropy per character, in bits, of the token's own
/// character frequencies. 24 random hex characters measured at least 2.4 in
/// 200,000 draws (longer and base64 tokens measure more); a string of mostly
/// one character, such as `aaaaaaabaaaaaaacaaaaaaadefgh`, measures about 1.5.
const MIN_BITS_PER_CHAR: f64 = 2.2;

/// Why a token is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WeakToken {
    #[error("looks like a placeholder (it contains `{0}`)")]
    Placeholder(&'static str),
    #[error("repeats one character {0} times in a row")]
    Repeated(usize),
    #[error("contains a run of {0} consecutive characters (like `abcd` or `4321`)")]
    Sequence(usize),
    #[error("is one piece of {0} characters repeated")]
    Periodic(usize),
    #[error("uses only {0} distinct characters")]
    FewDistinct(usize),
    #[error("has too little entropy ({0:.1} bits per character)")]
    LowEntropy(f64),
}

/// Checks that `token` looks random; the reason it does not, otherwise.
pub fn check(token: &str) -> Result<(), WeakToken> {
    let folded: String = token
        .chars()
        .filter(|c| !matches!(c, '-' | '_' | '.' | ' '))
        .flat_map(char::to_lowercase)
        .collect();
    if let Some(word) = PLACEHOLDERS.iter().find(|w| folded.contains(*w)) {
        return Err(WeakToken::Placeholder(word));
    }
    let chars: Vec<char> = token.chars().collect();
    let (repeated, sequence) = longest_runs(&chars);
    if repeated > MAX_RUN {
        return Err(WeakToken::Repeated(repeated));
    }
    if sequence > MAX_RUN {
        return Err(WeakToken::Sequence(sequence));
    }
    if let Some(period) = period(&chars) {
        return Err(WeakToken::Periodic(period));
    }
    let mut counts = std::collections::BTreeMap::new();
    for c in &chars {
        *counts.entry(c).or_insert(0usize) += 1;
    }
    if counts.len() < MIN_DISTINCT {
        return Err(WeakToken::FewDistinct(counts.len()));
    }
    let n = chars.len() as f64;
    let bits: f64 = counts
        .values()
        .map(|&k| {
            let p = k as f64 / n;
            -p * p.log2()
        })
        .sum();
    if bits < MIN_BITS_PER_CHAR {
        return Err(WeakToken::LowEntropy(bits));
    }
    Ok(())
}

/// The longest run of one repeated character, and the longest run of
/// characters each one above (or each one below) the previous.
fn longest_runs(chars: &[char]) -> (usize, usize) {
    let (mut repeated, mut sequence) = (1, 1);
    let (mut same, mut steps, mut direction) = (1, 1, 0i64);
    for pair in chars.windows(2) {
        let step = pair[1] as i64 - pair[0] as i64;
        same = if step == 0 { same + 1 } else { 1 };
        (steps, direction) = match step {
            1 | -1 if step == direction => (steps + 1, direction),
            1 | -1 => (2, step),
            _ => (1, 0),
        };
        repeated = repeated.max(same);
        sequence = sequence.max(steps);
    }
    (repeated, sequence)
}

/// The length of the piece `chars` repeats (at least twice; the last copy
/// may be cut short), if it is one.
fn period(chars: &[char]) -> Option<usize> {
    (1..=chars.len() / 2).find(|&p| chars.iter().skip(p).zip(chars).all(|(a, b)| a == b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_from_examples_are_refused() {
        for token in [
            "change-me-to-32-random-characters",
            "compose-admin-token-change-me",
            "local-admin-token-change-me",
            "CHANGE_ME_CHANGE_ME_CHANGE_ME",
            "please-replace-with-a-real-token",
            "your-token-here-0123abcd-4567",
            "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx",
            "example-admin-token-for-the-docs",
        ] {
            assert!(
                matches!(check(token), Err(WeakToken::Placeholder(_))),
                "{token}: {:?}",
                check(token)
            );
        }
    }

    #[test]
    fn typed_shapes_are_refused() {
        assert_eq!(check("aaaaaaaaaaaaaaaaaaaaaaaaaaaa"), Err(WeakToken::Repeated(28)));
        assert_eq!(check("ops-token-0123456789abcdef"), Err(WeakToken::Sequence(10)));
        assert_eq!(check("zyxwvutsrqponm-9f3a1c7e2b"), Err(WeakToken::Sequence(14)));
        assert_eq!(check("passwordpasswordpassword"), Err(WeakToken::Periodic(8)));
        assert_eq!(check("abababababababababababab"), Err(WeakToken::Periodic(2)));
        assert_eq!(check("1122112211221122334433443344"), Err(WeakToken::FewDistinct(4)));
        assert!(matches!(
            check("aaaaaaabaaaaaaacaaaaaaadefgh"),
            Err(WeakToken::LowEntropy(_))
        ));
    }

    #[test]
    fn random_tokens_pass() {
        // As `openssl rand -hex 32`, `openssl rand -base64 24`, a UUID and
        // Python's `secrets.token_urlsafe(24)` print them.
        for token in [
            "3f9a0c7e58b14d2e96a1f0b7c4d83e52a9167b0cf4e2d85a3b6c9e01f7d24a68",
            "q8Zk3VwN0fJr7uXb2LmT9sHc4YpA6eDg",
            "7c1e4b9a-2f63-4d85-a0b7-e93c5f182d46",
            "Vb3n_Q9xk2LrT8mZ-wY4hJ1sF6dC0pGa",
        ] {
            assert_eq!(check(token), Ok(()), "{token}");
        }
    }

    #[test]
    fn generated_tokens_pass() {
        // The bounds hold for many draws of the shortest accepted token (a
        // fixed seed: the same draws every run).
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x4e52_a17d);
        for _ in 0..2_000 {
            let token: String = (0..crate::config::admin::MIN_TOKEN_LEN)
                .map(|_| char::from_digit(rng.random_range(0..16), 16).unwrap())
                .collect();
            assert_eq!(check(&token), Ok(()), "{token}");
        }
    }
}
