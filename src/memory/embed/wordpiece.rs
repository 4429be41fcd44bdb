//! BERT's uncased WordPiece tokenizer over a `vocab.txt`: clean the text, split CJK
//! characters, lowercase and strip accents, split on whitespace and punctuation, then
//! cut each word into the longest vocabulary pieces (`##` marks a piece inside a word).

use std::collections::HashMap;

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// Words longer than this (in characters) become the unknown token, as in BERT.
const MAX_WORD_CHARS: usize = 100;

/// A WordPiece vocabulary.
pub struct WordPiece {
    ids: HashMap<String, u32>,
    unk: Option<u32>,
}

impl WordPiece {
    /// Reads `vocab.txt` (one token a line, the line number is its id).
    pub fn from_vocab(text: &str) -> Self {
        let ids: HashMap<String, u32> = text
            .lines()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as u32))
            .collect();
        let unk = ids.get("[UNK]").copied();
        Self { ids, unk }
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True for an empty vocabulary.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The id of a token.
    pub fn id(&self, token: &str) -> Option<u32> {
        self.ids.get(token).copied()
    }

    /// Token ids of `text` (no `[CLS]`/`[SEP]`), appended to `out`.
    pub fn encode_into(&self, text: &str, out: &mut Vec<u32>) {
        let mut piece = String::with_capacity(32);
        for word in words(text) {
            self.word_pieces(&word, &mut piece, out);
        }
    }

    /// Token ids of `text`.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        self.encode_into(text, &mut out);
        out
    }

    fn word_pieces(&self, word: &str, piece: &mut String, out: &mut Vec<u32>) {
        let chars: Vec<(usize, char)> = word.char_indices().collect();
        if chars.len() > MAX_WORD_CHARS {
            out.extend(self.unk);
            return;
        }
        let first = out.len();
        let mut start = 0;
        while start < chars.len() {
            let mut end = chars.len();
            let mut found = None;
            while start < end {
                piece.clear();
                if start > 0 {
                    piece.push_str("##");
                }
                let to = chars.get(end).map_or(word.len(), |c| c.0);
                piece.push_str(&word[chars[start].0..to]);
                if let Some(&id) = self.ids.get(piece.as_str()) {
                    found = Some(id);
                    break;
                }
                end -= 1;
            }
            match found {
                Some(id) => {
                    out.push(id);
                    start = end;
                }
                None => {
                    // A word with any unknown part is one unknown token.
                    out.truncate(first);
                    out.extend(self.unk);
                    return;
                }
            }
        }
    }
}

fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation() || (!c.is_ascii() && !c.is_alphanumeric() && !c.is_whitespace())
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0x20000..=0x2A6DF | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F | 0x2B820..=0x2CEAF | 0xF900..=0xFAFF | 0x2F800..=0x2FA1F)
}

/// BERT's basic tokenizer: normalised words and punctuation marks.
fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut Vec<String>| {
        if !word.is_empty() {
            out.push(std::mem::take(word));
        }
    };
    for c in text.nfd() {
        if c == '\0' || c == '\u{fffd}' || is_combining_mark(c) {
            continue;
        }
        if c.is_whitespace() || c.is_control() {
            flush(&mut word, &mut out);
        } else if is_punctuation(c) || is_cjk(c) {
            flush(&mut word, &mut out);
            out.push(c.to_string());
        } else {
            word.extend(c.to_lowercase());
        }
    }
    flush(&mut word, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab() -> WordPiece {
        WordPiece::from_vocab(
            "[PAD]\n[UNK]\n[CLS]\n[SEP]\nun\n##aff\n##able\nhello\n,\nworld\n!\ncafe\n",
        )
    }

    #[test]
    fn splits_words_into_longest_pieces() {
        let v = vocab();
        assert_eq!(v.encode("Unaffable"), vec![4, 5, 6]);
        assert_eq!(v.encode("Hello, WORLD!"), vec![7, 8, 9, 10]);
    }

    #[test]
    fn strips_accents_and_marks_unknown_words() {
        let v = vocab();
        assert_eq!(v.encode("Café"), vec![11]);
        assert_eq!(v.encode("hello zzz"), vec![7, 1]);
        assert_eq!(v.encode(&"a".repeat(200)), vec![1]);
        assert!(v.encode(" \t\n").is_empty());
    }
}
