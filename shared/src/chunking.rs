//! Cutting a model's streamed reply into speakable pieces, so text-to-speech starts on the first
//! clause instead of waiting for the whole reply, and never speaks half a word.
//!
//! A piece ends after a sentence end (`.`, `!`, `?`, `…`, possibly followed by closing quotes
//! or brackets) or a clause end (`,`, `;`, `:`, `—`) *followed by whitespace*, and includes that
//! one whitespace character. Requiring the whitespace is what keeps `3.5`, `10,000`, `p.m.` and
//! `https://…` whole. A sentence end after a known abbreviation (`Dr.`, `e.g.`) or a single
//! initial (`J. Smith`) is not an end, and neither is a bare list number (`1. `). A line break
//! always ends a piece; CJK sentence ends (`。！？`) end one without whitespace.
//!
//! When no boundary shows up within [`ChunkPolicy::max_chars`], the piece is cut at the last
//! space inside that window whose preceding word is not a number, so a number is never split
//! from its unit. A word longer than the window is never split at all.
//!
//! The pieces depend only on the text, not on how the model split it into deltas, and their
//! concatenation is exactly the text.

/// Tuning for [`Chunker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkPolicy {
    /// A clause end (`,;:—`) only cuts once the piece has at least this many characters, so
    /// TTS is not fed one-word fragments. Sentence ends always cut.
    pub min_clause_chars: usize,
    /// Past this many characters without a boundary, cut at a word boundary.
    pub max_chars: usize,
}

impl Default for ChunkPolicy {
    fn default() -> Self {
        Self {
            min_clause_chars: 12,
            max_chars: 200,
        }
    }
}

/// Words after which a period does not end a sentence (compared without the period,
/// case-insensitively).
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "etc", "e.g", "i.e", "a.m",
    "p.m", "no", "nos", "approx", "apt", "dept", "est", "fig", "inc", "ltd", "co", "corp", "jan",
    "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "u.s", "u.k",
    "ave", "blvd", "rd", "vol", "ca",
];

/// Incremental cutter: feed deltas with [`Chunker::push`], then [`Chunker::finish`].
#[derive(Debug, Clone, Default)]
pub struct Chunker {
    policy: ChunkPolicy,
    pending: String,
}

impl Chunker {
    /// A chunker with `policy`.
    pub fn new(policy: ChunkPolicy) -> Self {
        Self {
            policy,
            pending: String::new(),
        }
    }

    /// Adds a delta; returns the pieces that became complete, in order.
    pub fn push(&mut self, delta: &str) -> Vec<String> {
        self.pending.push_str(delta);
        let mut pieces = Vec::new();
        while let Some(cut) = next_cut(&self.pending, self.policy) {
            let rest = self.pending.split_off(cut);
            pieces.push(std::mem::replace(&mut self.pending, rest));
        }
        pieces
    }

    /// The text held back waiting for a boundary, if any; the chunker is empty afterwards.
    pub fn finish(&mut self) -> Option<String> {
        if self.pending.is_empty() {
            None
        } else {
            Some(std::mem::take(&mut self.pending))
        }
    }

    /// Text received but not yet returned as a piece.
    pub fn pending(&self) -> &str {
        &self.pending
    }
}

/// Cuts a complete text into pieces (what a `Chunker` fed the whole text at once returns).
pub fn chunk_text(text: &str, policy: ChunkPolicy) -> Vec<String> {
    let mut chunker = Chunker::new(policy);
    let mut pieces = chunker.push(text);
    pieces.extend(chunker.finish());
    pieces
}

/// Byte offset just after the first boundary in `text`, when one is certain from `text` alone.
fn next_cut(text: &str, policy: ChunkPolicy) -> Option<usize> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut count = 0_usize;
    for (i, &(offset, c)) in chars.iter().enumerate() {
        count += 1;
        if count == policy.max_chars + 1
            && let Some(cut) = window_cut(text, &chars[..i])
        {
            return Some(cut);
        }
        if count > policy.max_chars && c.is_whitespace() && i > 0 {
            // Past the window, which was one long word: the first acceptable space cuts.
            if let Some(cut) = window_cut(text, &chars[..=i]) {
                return Some(cut);
            }
        }
        if c == '\n' {
            return Some(offset + c.len_utf8());
        }
        if matches!(c, '。' | '！' | '？') {
            return Some(offset + c.len_utf8());
        }
        let sentence = matches!(c, '.' | '!' | '?' | '…');
        let clause = matches!(c, ',' | ';' | ':' | '—');
        if !sentence && !clause {
            continue;
        }
        // Closing quotes and brackets belong to the piece they close.
        let mut j = i + 1;
        while j < chars.len() && is_closer(chars[j].1) {
            j += 1;
        }
        // The character after decides; without it we cannot know yet (`3.` may become `3.5`).
        let &(after_offset, after) = chars.get(j)?;
        if !after.is_whitespace() {
            continue;
        }
        let cut = after_offset + after.len_utf8();
        if sentence && c == '.' && !ends_sentence(&text[..offset], &text[..cut]) {
            continue;
        }
        if clause && j + 1 < policy.min_clause_chars {
            continue;
        }
        return Some(cut);
    }
    None
}

/// Whether a period after `before` really ends a sentence; `piece` is the whole candidate piece.
fn ends_sentence(before: &str, piece: &str) -> bool {
    let word = before
        .rsplit(|c: char| c.is_whitespace() || matches!(c, '(' | '"' | '“' | '\''))
        .next()
        .unwrap_or("");
    if word.is_empty() {
        return true;
    }
    let lower = word.to_lowercase();
    if ABBREVIATIONS.contains(&lower.as_str()) {
        return false;
    }
    // A single initial: "J. Smith", "U." in "U. S.".
    let mut letters = word.chars();
    if let (Some(first), None) = (letters.next(), letters.next())
        && first.is_alphabetic()
        && first.is_uppercase()
    {
        return false;
    }
    // A bare list number at the start of a piece: "1. ", "12. ".
    let trimmed = piece.trim();
    let number = trimmed.trim_end_matches('.');
    !(number.len() <= 3 && !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()))
}

/// Cut inside a window with no boundary: after the last whitespace whose preceding word is not
/// a number. `None` when the window is one long word or only numbers precede its spaces.
fn window_cut(text: &str, window: &[(usize, char)]) -> Option<usize> {
    for (k, &(offset, c)) in window.iter().enumerate().rev() {
        if !c.is_whitespace() || k == 0 {
            continue;
        }
        let word_end = offset;
        let word_start = text[..word_end]
            .rfind(char::is_whitespace)
            .map_or(0, |p| p + 1);
        let word = &text[word_start..word_end];
        if word.is_empty() || ends_with_number(word) {
            continue;
        }
        return Some(offset + c.len_utf8());
    }
    None
}

/// "5", "3.5", "$20", "10,000", "2nd"? — a word ending in a digit, maybe after a currency sign.
fn ends_with_number(word: &str) -> bool {
    word.chars().last().is_some_and(|c| c.is_ascii_digit())
}

fn is_closer(c: char) -> bool {
    matches!(c, '"' | '\'' | '”' | '’' | ')' | ']' | '»')
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn pieces(text: &str) -> Vec<String> {
        chunk_text(text, ChunkPolicy::default())
    }

    #[test]
    fn sentences_and_long_clauses_are_cut_after_their_space() {
        assert_eq!(
            pieces("Hello there. How are you today, my good friend? Fine!"),
            vec![
                "Hello there. ",
                "How are you today, ",
                "my good friend? ",
                "Fine!"
            ]
        );
    }

    #[test]
    fn short_clauses_wait_for_more_text() {
        assert_eq!(pieces("Sure, I can do that."), vec!["Sure, I can do that."]);
    }

    #[test]
    fn numbers_stay_whole() {
        for text in [
            "It costs 3.50 dollars",
            "About 10,000 people came",
            "Version 2.0.1 shipped",
            "We open at 9:30 sharp",
        ] {
            assert_eq!(pieces(text), vec![text], "{text}");
        }
    }

    #[test]
    fn abbreviations_initials_and_list_numbers_do_not_end_sentences() {
        assert_eq!(
            pieces("Dr. Smith will see you at 5 p.m. tomorrow. Thanks."),
            vec!["Dr. Smith will see you at 5 p.m. tomorrow. ", "Thanks."]
        );
        assert_eq!(
            pieces("Ask J. R. Tolkien. Now."),
            vec!["Ask J. R. Tolkien. ", "Now."]
        );
        assert_eq!(
            pieces("1. Open the app. 2. Tap start."),
            vec!["1. Open the app. ", "2. Tap start."]
        );
    }

    #[test]
    fn closing_quotes_stay_with_their_sentence() {
        assert_eq!(
            pieces("He said \"stop.\" Then left."),
            vec!["He said \"stop.\" ", "Then left."]
        );
    }

    #[test]
    fn a_boundary_needs_the_next_character() {
        let mut chunker = Chunker::new(ChunkPolicy::default());
        assert!(chunker.push("It is 3.").is_empty(), "may become 3.5");
        assert_eq!(chunker.push("5 km. Next"), vec!["It is 3.5 km. "]);
        assert_eq!(chunker.finish().as_deref(), Some("Next"));
        assert_eq!(chunker.finish(), None);
    }

    #[test]
    fn line_breaks_and_cjk_sentence_ends_cut_at_once() {
        assert_eq!(pieces("Item one\nItem two"), vec!["Item one\n", "Item two"]);
        assert_eq!(pieces("你好。谢谢！"), vec!["你好。", "谢谢！"]);
    }

    #[test]
    fn long_runs_cut_at_a_word_boundary_never_between_number_and_unit() {
        let policy = ChunkPolicy {
            min_clause_chars: 12,
            max_chars: 20,
        };
        let got = chunk_text("the distance is about 15 kilometres to go", policy);
        assert_eq!(got.concat(), "the distance is about 15 kilometres to go");
        for piece in &got[..got.len() - 1] {
            assert!(piece.ends_with(' '), "{got:?}");
            assert!(!piece.trim_end().ends_with("15"), "{got:?}");
        }
        // One word longer than the window is never split.
        let word = "a".repeat(50);
        assert_eq!(chunk_text(&word, policy), vec![word.clone()]);
    }

    proptest! {
        #[test]
        fn pieces_concatenate_to_the_text_however_it_was_split(
            text in "[a-zA-Z0-9 .,;:!?\n\"'$%-]{0,300}",
            cuts in proptest::collection::vec(0_usize..300, 0..12),
        ) {
            let whole = chunk_text(&text, ChunkPolicy::default());
            prop_assert_eq!(whole.concat(), text.clone());

            let mut offsets: Vec<usize> = cuts.into_iter().map(|c| c.min(text.len())).collect();
            offsets.sort_unstable();
            let mut chunker = Chunker::new(ChunkPolicy::default());
            let mut streamed = Vec::new();
            let mut from = 0;
            for to in offsets.into_iter().chain([text.len()]) {
                streamed.extend(chunker.push(&text[from..to]));
                from = to;
            }
            streamed.extend(chunker.finish());
            prop_assert_eq!(streamed, whole);
        }

        #[test]
        fn no_piece_but_the_last_ends_inside_a_word(
            text in "[a-z0-9 .,!?]{0,300}",
        ) {
            let got = chunk_text(&text, ChunkPolicy { min_clause_chars: 4, max_chars: 40 });
            for piece in got.iter().take(got.len().saturating_sub(1)) {
                prop_assert!(
                    piece.ends_with(char::is_whitespace),
                    "piece {:?} of {:?}", piece, got
                );
                let word = piece.trim_end().rsplit(' ').next().unwrap_or("");
                let terminated = word.ends_with(['.', ',', '!', '?']);
                prop_assert!(terminated || !ends_with_number(word), "number split from what follows: {:?}", got);
            }
        }
    }
}
