//! Structure-aware chunking with overlap.
//!
//! [`chunk`] splits a document's normalized text into [`Chunk`]s of at most
//! `size` characters (Unicode scalar values) that repeat up to `overlap`
//! characters of the previous chunk. Chunks are contiguous substrings of the
//! text, so the text is restored exactly by concatenating the first chunk and,
//! for every later chunk, its text after the first `overlap` bytes.
//!
//! # Where a chunk ends
//!
//! Every grapheme boundary (UAX #29 extended grapheme clusters) is a possible
//! end; a chunk never ends inside a UTF-8 character or a grapheme cluster, so a
//! zero-width non-joiner or a combining mark stays with its base and emoji ZWJ
//! sequences and flags stay whole. Each boundary has a strength; from strongest
//! to weakest:
//!
//! * **6** before a heading line: `#`…`######` then a space or tab at the start of a
//!   line, outside fenced code blocks (lines starting with ```` ``` ```` or
//!   `~~~`);
//! * **5** before a line that follows a blank (whitespace-only) line (paragraph);
//! * **4** before any other non-blank line (line break);
//! * **3** after a sentence end: `.` `!` `?` `…` `؟` `۔` `。` `！` `？`, optionally
//!   followed by closing quotes or brackets, then whitespace (the break is
//!   before the next non-whitespace character); the CJK marks `。！？` also
//!   count without whitespace after them;
//! * **2** before a word that follows whitespace;
//! * **1** any other UAX #29 word boundary before a non-whitespace character
//!   (for example between CJK ideographs, or before punctuation);
//! * **0** any other grapheme boundary.
//!
//! Breaks of strength 1–6 sit before non-whitespace, so the whitespace between
//! two chunks stays at the end of the earlier chunk.
//!
//! The heuristic, for a chunk starting at `start` whose previous chunk ended
//! at `prev_end` (equal to `start` for the first chunk):
//!
//! 1. `limit` is the last grapheme boundary at most `size` characters after
//!    `start`. If all the remaining non-whitespace text fits before `limit`,
//!    the chunk ends at `limit` (it is the last chunk, or only trailing
//!    whitespace longer than the size follows).
//! 2. Otherwise only boundaries in a window qualify: at least `size / 2`
//!    characters after `start`, and at least half of the new text that could
//!    fit (half of the characters between `prev_end` and `limit`, rounded
//!    up). Of the qualifying boundaries the strongest kind wins, and among
//!    equally strong ones the latest. If none qualifies, the chunk ends at
//!    `limit`.
//! 3. A single grapheme longer than `size` characters becomes a chunk of its
//!    own (the only chunk that exceeds `size`).
//!
//! # Overlap
//!
//! The next chunk starts `overlap` characters before the previous chunk's end,
//! moved forward to the first grapheme boundary at or after that point, and
//! then forward to the first word that follows whitespace (a boundary of
//! strength ≥ 2) before the previous end, else to the first other word
//! boundary (strength 1), so the overlap does not begin in the middle of a
//! word; if the region only has word boundaries before punctuation there is no
//! overlap, and in a run without any word boundary the overlap starts at the
//! grapheme boundary. So a chunk repeats *at most* `overlap` characters, and:
//!
//! * when the previous chunk ended before a heading there is no overlap (a new
//!   section starts clean), and when a heading line starts inside the previous
//!   chunk the overlap begins no earlier than that heading line;
//! * every chunk starts after the previous chunk's start, and each chunk adds
//!   at least one grapheme of new text: when the overlap would leave no room
//!   for the next grapheme within `size`, the overlap is shortened;
//! * `overlap` is clamped to `size - 1` and `size` 0 is treated as 1 (the
//!   service itself only allows sizes of 100 and more).
//!
//! # Whitespace
//!
//! The text is kept exactly. Empty or whitespace-only text gives no chunks.
//! A chunk consisting only of whitespace can only occur when the text contains a
//! run of whitespace longer than about half the size.
//!
//! # Headings
//!
//! [`Chunk::heading`] is the path of headings in force at the chunk's start,
//! joined by ` › ` (for `# A`, then `## B`: `A › B`; a later `# C` resets the
//! path to `C`). A chunk that starts exactly at a heading line is under that
//! heading.
//!
//! # Cost
//!
//! Grapheme and word boundaries and their strengths are computed once per
//! document (with an ASCII fast path for graphemes); each chunk then looks at
//! most `size` boundaries back, so chunking is linear in the text length times
//! `size / (size - overlap)`.

use unicode_segmentation::{GraphemeCursor, UnicodeSegmentation};

/// One chunk of a document.
#[derive(Clone, Debug, PartialEq)]
pub struct Chunk {
    /// 0-based position in the document.
    pub index: usize,
    /// A contiguous substring of the document text.
    pub text: String,
    /// Byte offset of `text` in the document text.
    pub start: usize,
    /// Bytes at the start of `text` repeated from the previous chunk (0 for the
    /// first chunk).
    pub overlap: usize,
    /// The heading path in force at the chunk's start (`"Shipping › International"`),
    /// `""` if none.
    pub heading: String,
}

const HEADING: u8 = 6;
const PARAGRAPH: u8 = 5;
const LINE: u8 = 4;
const SENTENCE: u8 = 3;
const WORD: u8 = 2;

/// Separator between the levels of [`Chunk::heading`].
pub const HEADING_SEPARATOR: &str = " › ";

/// Splits `text` into chunks of at most `size` characters (a single grapheme
/// longer than `size` is the only exception), each after the first starting
/// with up to `overlap` characters of the previous chunk's end. See the module
/// docs for the exact rules.
pub fn chunk(text: &str, size: usize, overlap: usize) -> Vec<Chunk> {
    if text.trim().is_empty() {
        return Vec::new();
    }
    let size = size.max(1);
    let overlap = overlap.min(size - 1);
    let doc = Analysis::new(text);
    let n = doc.bytes.len() - 1; // number of graphemes
    let content_end = doc.index_of(text.trim_end().len());

    let mut chunks = Vec::new();
    let mut headings = HeadingPath::default();
    let mut start = 0usize;
    let mut prev_end = 0usize;
    loop {
        let mut limit = doc.last_fitting(doc.chars[start] + size);
        if limit <= prev_end {
            // The overlap leaves no room for the next grapheme: shorten it.
            let next = prev_end + 1;
            let need = doc.chars[next].saturating_sub(size);
            start = doc
                .chars
                .partition_point(|&c| c < need)
                .clamp(start, prev_end);
            limit = doc.last_fitting(doc.chars[start] + size).max(next);
        }
        let end = if limit >= content_end {
            limit
        } else {
            doc.choose(text, start, prev_end, limit, size)
        };

        let (sb, eb) = (doc.bytes[start], doc.bytes[end]);
        chunks.push(Chunk {
            index: chunks.len(),
            text: text[sb..eb].to_owned(),
            start: sb,
            overlap: doc.bytes[prev_end].saturating_sub(sb),
            heading: headings.at(&doc.headings, sb),
        });
        if end >= n {
            break;
        }
        start = doc.next_start(text, start, end, overlap);
        prev_end = end;
    }
    chunks
}

/// Per-document boundary tables, indexed by grapheme boundary number.
struct Analysis {
    /// Byte offset of each grapheme boundary, `0` first and `text.len()` last.
    bytes: Vec<usize>,
    /// Character (scalar value) offset of each grapheme boundary.
    chars: Vec<usize>,
    /// Break strength of each boundary (see the module docs).
    strength: Vec<u8>,
    /// Heading lines: boundary index, level, title.
    headings: Vec<Heading>,
}

struct Heading {
    at: usize,
    byte: usize,
    level: usize,
    title: String,
}

impl Analysis {
    fn new(text: &str) -> Analysis {
        let mut bytes = Vec::with_capacity(text.len() + 1);
        let mut chars = Vec::with_capacity(text.len() + 1);
        if text.is_ascii() {
            // Every ASCII character is its own grapheme, except CR LF.
            let b = text.as_bytes();
            for i in 0..b.len() {
                if i == 0 || !(b[i - 1] == b'\r' && b[i] == b'\n') {
                    bytes.push(i);
                    chars.push(i);
                }
            }
            bytes.push(text.len());
            chars.push(text.len());
        } else {
            // Between two "simple" characters (see `simple`) there is always a
            // grapheme boundary (except CR LF); elsewhere ask the UAX #29
            // grapheme cursor, with the whole text as context.
            let mut prev: Option<char> = None;
            let mut c = 0;
            for (i, ch) in text.char_indices() {
                let boundary = match prev {
                    None => true,
                    Some(p) if simple(p) && simple(ch) => !(p == '\r' && ch == '\n'),
                    Some(_) => GraphemeCursor::new(i, text.len(), true)
                        .is_boundary(text, 0)
                        .unwrap_or(false),
                };
                if boundary {
                    bytes.push(i);
                    chars.push(c);
                }
                c += 1;
                prev = Some(ch);
            }
            bytes.push(text.len());
            chars.push(c);
        }
        let mut a = Analysis {
            strength: vec![0; bytes.len()],
            bytes,
            chars,
            headings: Vec::new(),
        };
        a.compute_strengths(text);
        a
    }

    /// Boundary index of a byte offset that is a boundary (else the next one).
    fn index_of(&self, byte: usize) -> usize {
        self.bytes.partition_point(|&b| b < byte)
    }

    /// Largest boundary index whose character offset is ≤ `limit`.
    fn last_fitting(&self, limit: usize) -> usize {
        self.chars.partition_point(|&c| c <= limit) - 1
    }

    fn compute_strengths(&mut self, text: &str) {
        let n = self.bytes.len() - 1;

        // Words after whitespace and sentence ends, one pass over the
        // boundaries. (UAX #29 word boundaries are only computed when needed,
        // for a window, see `weak_words`.)
        for gi in 1..n {
            let p = self.bytes[gi];
            let next = text_at(text, p);
            if next.is_whitespace() {
                continue;
            }
            let prev = text[..p].chars().next_back().unwrap_or(' ');
            let mut s = 0;
            if prev.is_whitespace() {
                s = if ends_sentence(&text[..p]) {
                    SENTENCE
                } else {
                    WORD
                };
            } else if (!prev.is_ascii() || is_closer(prev)) && is_cjk_sentence_end(&text[..p]) {
                s = SENTENCE;
            }
            self.strength[gi] = s;
        }

        // Lines, paragraphs, headings (outside fenced code).
        let mut fence: Option<(u8, usize)> = None;
        let mut prev_blank = false;
        let mut offset = 0;
        for line in text.split_inclusive('\n') {
            let here = offset;
            offset += line.len();
            let bare = line.trim_end_matches(['\n', '\r']);
            if let Some((ch, len)) = fence_marker(bare) {
                match fence {
                    None => fence = Some((ch, len)),
                    Some((open, l)) if open == ch && len >= l => fence = None,
                    Some(_) => {}
                }
            }
            let blank = bare.trim().is_empty();
            let heading = if fence.is_none() {
                heading_line(bare)
            } else {
                None
            };
            let gi = self.index_of(here);
            if let Some((level, title)) = heading {
                self.headings.push(Heading {
                    at: gi,
                    byte: here,
                    level,
                    title: title.to_owned(),
                });
            }
            if here > 0 && !blank && self.bytes[gi] == here {
                let s = if heading.is_some() {
                    HEADING
                } else if prev_blank {
                    PARAGRAPH
                } else {
                    LINE
                };
                self.strength[gi] = self.strength[gi].max(s);
            }
            prev_blank = blank;
        }
    }

    /// Picks the end of a chunk that cannot reach the end of the content.
    fn choose(
        &self,
        text: &str,
        start: usize,
        prev_end: usize,
        limit: usize,
        size: usize,
    ) -> usize {
        let (c_prev, c_limit) = (self.chars[prev_end], self.chars[limit]);
        let lo = (self.chars[start] + size / 2).max(c_prev + (c_limit - c_prev).div_ceil(2));
        let mut best = (self.strength[limit], limit);
        let mut gi = limit;
        while gi > prev_end + 1 && best.0 < HEADING {
            if self.chars[gi - 1] < lo {
                break;
            }
            gi -= 1;
            if self.strength[gi] > best.0 {
                best = (self.strength[gi], gi);
            }
        }
        if best.0 < WORD
            && let Some(&w) = self.weak_words(text, gi, limit).last()
        {
            return w;
        }
        best.1
    }

    /// Boundaries in `lo..=hi` that are UAX #29 word boundaries before a
    /// non-whitespace character (strength 1), segmenting only a window of the
    /// text with two graphemes of context on each side.
    fn weak_words(&self, text: &str, lo: usize, hi: usize) -> Vec<usize> {
        let n = self.bytes.len() - 1;
        let a = lo.saturating_sub(2);
        let b = (hi + 2).min(n);
        let base = self.bytes[a];
        let mut out = Vec::new();
        let mut gi = a;
        for (off, _) in text[base..self.bytes[b]].split_word_bound_indices() {
            let p = base + off;
            while gi < b && self.bytes[gi] < p {
                gi += 1;
            }
            if self.bytes[gi] == p
                && (lo..=hi).contains(&gi)
                && (gi > a || a == 0)
                && !text_at(text, p).is_whitespace()
            {
                out.push(gi);
            }
        }
        out
    }

    /// Start of the chunk after the one spanning `start..end`.
    fn next_start(&self, text: &str, start: usize, end: usize, overlap: usize) -> usize {
        if overlap == 0 || self.strength[end] == HEADING {
            return end;
        }
        let target = self.chars[end].saturating_sub(overlap);
        let first = self.chars.partition_point(|&c| c < target);
        let mut next = (first..end)
            .find(|&gi| self.strength[gi] >= WORD)
            .or_else(|| {
                // A word boundary not after whitespace (CJK, after punctuation):
                // only before a letter or digit; if the window has word
                // boundaries but none of those, no overlap at all.
                if first >= end {
                    return None;
                }
                let weak = self.weak_words(text, first, end - 1);
                weak.iter()
                    .copied()
                    .find(|&gi| text_at(text, self.bytes[gi]).is_alphanumeric())
                    .or((!weak.is_empty()).then_some(end))
            })
            .unwrap_or(first);
        // Do not reach back across a heading line inside the previous chunk.
        let h = self.headings.partition_point(|h| h.at < end);
        if h > 0 && self.headings[h - 1].at > start {
            next = next.max(self.headings[h - 1].at);
        }
        next.clamp(start + 1, end)
    }
}

/// Characters with Grapheme_Cluster_Break=Other (or ASCII), no Indic
/// conjunct role and not Extended_Pictographic: between two of them there is
/// always a grapheme boundary (CR LF aside). A fast path only: characters not
/// listed here are decided by the UAX #29 implementation.
fn simple(c: char) -> bool {
    matches!(c as u32,
        0x00..=0x7F
        | 0xA0..=0xA8
        | 0xAA..=0xAC
        | 0xAF..=0x24F
        | 0x370..=0x482
        | 0x48A..=0x52F
        | 0x5D0..=0x5EA
        | 0x60C
        | 0x61B
        | 0x61F..=0x64A
        | 0x660..=0x66F
        | 0x671..=0x6D5
        | 0x6F0..=0x6FF
        | 0x2010..=0x2027
        | 0x2030..=0x203B
        | 0x3000..=0x3029
        | 0x3041..=0x3096
        | 0x30A1..=0x30FA
        | 0x4E00..=0x9FFF
        | 0xFF01..=0xFF5E
    )
}

fn text_at(text: &str, byte: usize) -> char {
    text[byte..].chars().next().unwrap_or(' ')
}

/// Whether `before` ends with a sentence terminator, optional closing
/// punctuation, then whitespace.
fn ends_sentence(before: &str) -> bool {
    let rest = before.trim_end();
    let rest = rest.trim_end_matches(is_closer);
    rest.ends_with(['.', '!', '?', '…', '؟', '۔', '。', '！', '？'])
}

/// Whether `before` ends with a CJK sentence mark (closers allowed after it).
fn is_cjk_sentence_end(before: &str) -> bool {
    before
        .trim_end_matches(is_closer)
        .ends_with(['。', '！', '？'])
}

fn is_closer(c: char) -> bool {
    matches!(
        c,
        '"' | '\'' | ')' | ']' | '}' | '»' | '”' | '’' | '」' | '』' | '）' | '】' | '〉' | '》'
    )
}

/// `#`..`######` then a space or tab at the start of the line.
fn heading_line(line: &str) -> Option<(usize, &str)> {
    let level = line.bytes().take_while(|&b| b == b'#').count();
    if !(1..=6).contains(&level) || !line[level..].starts_with([' ', '\t']) {
        return None;
    }
    let mut title = line[level..].trim();
    let without_closing = title.trim_end_matches('#');
    if without_closing.is_empty() || without_closing.ends_with([' ', '\t']) {
        title = without_closing.trim_end();
    }
    Some((level, title))
}

/// A fenced code block's marker line: its character (`` ` `` or `~`) and length (at least 3,
/// indented at most 3 spaces). Shared with [`crate::formats`] (Markdown titles).
pub(crate) fn fence_marker(line: &str) -> Option<(u8, usize)> {
    let trimmed = line.trim_start_matches(' ');
    if line.len() - trimmed.len() > 3 {
        return None;
    }
    let first = *trimmed.as_bytes().first()?;
    if first != b'`' && first != b'~' {
        return None;
    }
    let n = trimmed.bytes().take_while(|&b| b == first).count();
    (n >= 3).then_some((first, n))
}

/// Heading stack, advanced monotonically over the document.
#[derive(Default)]
struct HeadingPath {
    next: usize,
    stack: Vec<(usize, String)>,
}

impl HeadingPath {
    fn at(&mut self, headings: &[Heading], byte: usize) -> String {
        while self.next < headings.len() && headings[self.next].byte <= byte {
            let h = &headings[self.next];
            while self.stack.last().is_some_and(|(l, _)| *l >= h.level) {
                self.stack.pop();
            }
            self.stack.push((h.level, h.title.clone()));
            self.next += 1;
        }
        let mut path = String::new();
        for (_, t) in self.stack.iter().filter(|(_, t)| !t.is_empty()) {
            if !path.is_empty() {
                path.push_str(HEADING_SEPARATOR);
            }
            path.push_str(t);
        }
        path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks every documented invariant of `chunk(text, size, overlap)`.
    fn check(text: &str, size: usize, overlap: usize) -> Vec<Chunk> {
        let chunks = chunk(text, size, overlap);
        if text.trim().is_empty() {
            assert!(chunks.is_empty());
            return chunks;
        }
        let bounds: std::collections::HashSet<usize> = text
            .grapheme_indices(true)
            .map(|(i, _)| i)
            .chain([text.len()])
            .collect();
        let mut rebuilt = String::new();
        let mut prev_end = 0;
        let mut prev_start = None;
        for (i, c) in chunks.iter().enumerate() {
            assert_eq!(c.index, i);
            let end = c.start + c.text.len();
            assert_eq!(
                &text[c.start..end],
                c.text,
                "chunk {i} is not at its offset"
            );
            assert!(
                bounds.contains(&c.start),
                "chunk {i} starts inside a grapheme"
            );
            assert!(bounds.contains(&end), "chunk {i} ends inside a grapheme");
            assert_eq!(c.start + c.overlap, prev_end, "chunk {i} is not contiguous");
            assert!(c.text.len() > c.overlap, "chunk {i} adds no new text");
            if i == 0 {
                assert_eq!(c.overlap, 0);
            }
            if overlap == 0 {
                assert_eq!(c.overlap, 0);
            }
            assert!(prev_start.is_none_or(|p| c.start > p));
            let overlap_chars = c.text[..c.overlap].chars().count();
            assert!(
                overlap_chars <= overlap,
                "chunk {i} overlaps {overlap_chars} > {overlap}"
            );
            let n = c.text.chars().count();
            assert!(
                n <= size.max(1) || c.text.graphemes(true).count() == 1,
                "chunk {i} has {n} chars > {size}: {:?}",
                c.text
            );
            rebuilt.push_str(&c.text[c.overlap..]);
            prev_end = end;
            prev_start = Some(c.start);
        }
        assert_eq!(rebuilt, text, "round trip");
        chunks
    }

    /// Small deterministic PRNG (xorshift64*).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    const PIECES: &[&str] = &[
        "hello",
        "world",
        "the",
        "quick",
        "brown",
        "fox",
        " ",
        " ",
        " ",
        " ",
        "\n",
        "\n\n",
        ". ",
        "! ",
        "? ",
        ", ",
        "# Title\n",
        "## Section\n",
        "### Deep\n",
        "می‌خواهم",
        "کتاب‌ها",
        "سفارشم",
        "؟ ",
        "۔ ",
        "مرحبا",
        "بالعالم",
        "123",
        "4.5",
        "漢字",
        "日本語",
        "。",
        "！",
        "e\u{301}",
        "a\u{308}\u{323}",
        "👩‍👩‍👧‍👦",
        "🇮🇷",
        "🇩🇪",
        "👍🏽",
        "\u{200c}",
        "\r\n",
        "\t",
        "…",
        "\"quoted.\" ",
        "```\n# not a heading\n```\n",
        "- item\n",
        "Supercalifragilisticexpialidocious",
        "ααααααααααα",
        "x",
    ];

    fn random_text(rng: &mut Rng, pieces: usize) -> String {
        let mut s = String::new();
        for _ in 0..pieces {
            let p = PIECES[rng.below(PIECES.len())];
            if rng.below(50) == 0 {
                // a long word without spaces
                for _ in 0..rng.below(300) {
                    s.push_str(if rng.below(2) == 0 { "ab" } else { "ش" });
                }
            } else {
                s.push_str(p);
            }
        }
        s
    }

    #[test]
    fn property_round_trip_many_inputs() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for round in 0..1500 {
            let pieces = rng.below(400);
            let text = random_text(&mut rng, pieces);
            let size = match round % 4 {
                0 => 100,
                1 => 100 + rng.below(400),
                2 => 1 + rng.below(40), // below the service minimum, still correct
                _ => 2000,
            };
            let overlap = rng.below(size);
            let chunks = check(&text, size, overlap);
            // Without long whitespace runs no chunk is whitespace-only.
            if size >= 100 {
                for c in &chunks {
                    assert!(!c.text.trim().is_empty(), "whitespace-only chunk {c:?}");
                }
            }
        }
    }

    #[test]
    fn size_100_every_overlap() {
        let mut rng = Rng(42);
        let text = random_text(&mut rng, 600);
        for overlap in 0..100 {
            check(&text, 100, overlap);
        }
        let persian = "می‌خواهم سفارشم را پس بدهم. کتاب‌ها را کی می‌فرستید؟ ".repeat(20);
        for overlap in 0..100 {
            check(&persian, 100, overlap);
        }
    }

    #[test]
    fn grapheme_table_matches_unicode_segmentation() {
        // The fast path must agree with UAX #29 exactly.
        let mut probe = String::new();
        let tricky = [
            "\u{301}",
            "\u{200c}",
            "\u{200d}",
            "\u{64b}",
            "\u{670}",
            "\u{600}",
            "\u{6dd}",
            "\u{fe0f}",
            "\u{20e3}",
            "\u{1f1ee}",
            "\u{1f44d}",
            "\u{1f3fd}",
            "\r",
            "\n",
            "\r\n",
            "\u{a9}",
            "\u{3030}",
            "\u{302a}",
            "\u{3099}",
            "\u{1100}",
            "\u{1161}",
            "\u{ac00}",
            "\u{915}",
            "\u{94d}",
            "\u{924}",
            "\u{e33}",
            "\u{903}",
            "\u{ad}",
            "\u{200b}",
        ];
        let mut rng = Rng(99);
        let ranges: [(u32, u32); 20] = [
            (0x20, 0x7F),
            (0xA0, 0xA8),
            (0xAA, 0xAC),
            (0xAF, 0x24F),
            (0x370, 0x482),
            (0x48A, 0x52F),
            (0x5D0, 0x5EA),
            (0x60C, 0x60C),
            (0x61B, 0x61B),
            (0x61F, 0x64A),
            (0x660, 0x66F),
            (0x671, 0x6D5),
            (0x6F0, 0x6FF),
            (0x2010, 0x2027),
            (0x2030, 0x203B),
            (0x3000, 0x3029),
            (0x3041, 0x3096),
            (0x30A1, 0x30FA),
            (0x4E00, 0x9FFF),
            (0xFF01, 0xFF5E),
        ];
        for _ in 0..20_000 {
            if rng.below(3) == 0 {
                probe.push_str(tricky[rng.below(tricky.len())]);
            } else {
                let (lo, hi) = ranges[rng.below(ranges.len())];
                let c = lo + rng.below((hi - lo + 1) as usize) as u32;
                probe.push(char::from_u32(c).unwrap());
            }
        }
        // every character of the fast-path ranges next to each other
        for (lo, hi) in ranges {
            for c in lo..=hi {
                probe.push(char::from_u32(c).unwrap());
            }
        }
        let a = Analysis::new(&probe);
        let want: Vec<usize> = probe
            .grapheme_indices(true)
            .map(|(i, _)| i)
            .chain([probe.len()])
            .collect();
        assert_eq!(a.bytes, want);
        assert_eq!(*a.chars.last().unwrap(), probe.chars().count());
    }

    #[test]
    fn empty_and_whitespace() {
        assert!(chunk("", 100, 10).is_empty());
        assert!(chunk(" \n\t\r\n ", 100, 10).is_empty());
        let c = check("  hi  ", 100, 10);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].text, "  hi  ");
    }

    #[test]
    fn persian_zwnj_stays_with_its_word() {
        let text = "می‌خواهم سفارشم را پس بدهم. کتاب‌ها را کی می‌فرستید؟ ".repeat(30);
        for overlap in [0, 10, 30, 60] {
            for c in check(&text, 100, overlap) {
                // A ZWNJ never starts a chunk and never ends one.
                assert!(!c.text.starts_with('\u{200c}'));
                assert!(!c.text.ends_with('\u{200c}'));
                // Words are never cut: each chunk starts at a word start and,
                // except the last, ends after whitespace.
                let first = c.text.chars().next().unwrap();
                assert!("مسرپبک".contains(first), "{first}");
            }
        }
        // Sentence ends are preferred over plain word boundaries.
        let c = check(&text, 100, 0);
        assert!(
            c[0].text.trim_end().ends_with(['.', '؟']),
            "{:?}",
            c[0].text
        );
        // The ZWNJ survives byte for byte.
        assert!(c[0].text.contains("می\u{200c}خواهم"));
    }

    #[test]
    fn arabic_and_mixed_direction_with_numbers() {
        let text = "مرحبا بالعالم، الطلب رقم 12345 وصل في 2024-05-01. Order #42 shipped to \
                    دبي on 3/4/2024 for 99.50 AED. "
            .repeat(15);
        for overlap in [0, 25, 50] {
            let chunks = check(&text, 120, overlap);
            for c in &chunks[..chunks.len() - 1] {
                // never split inside a number
                let end = c.start + c.text.len();
                let (a, b) = (text[..end].chars().next_back(), text[end..].chars().next());
                assert!(
                    !(a.is_some_and(|a| a.is_ascii_digit())
                        && b.is_some_and(|b| b.is_ascii_digit())),
                    "split inside a number at {end}"
                );
            }
        }
    }

    #[test]
    fn combining_marks_emoji_and_flags_stay_whole() {
        let unit = "e\u{301}a\u{308}\u{323}👩‍👩‍👧‍👦🇮🇷🇩🇪👍🏽";
        let text = unit.repeat(60); // no spaces at all: grapheme fallback
        for overlap in [0, 7, 50, 99] {
            for c in check(&text, 100, overlap) {
                assert!(!c.text.starts_with('\u{301}'));
                assert!(!c.text.starts_with('\u{200d}'));
                assert!(!c.text.ends_with('\u{200d}'));
            }
        }
        // a grapheme longer than the size is a chunk of its own
        let family = "👩‍👩‍👧‍👦"; // 7 scalar values
        let c = check(&format!("ab{family}{family}cd"), 3, 1);
        assert!(c.iter().any(|c| c.text == family));
        let zalgo = format!("a{}", "\u{301}".repeat(150));
        let c = check(&format!("x {zalgo} y"), 100, 10);
        assert!(c.iter().any(|c| c.text == zalgo));
    }

    #[test]
    fn cjk_breaks_after_sentence_marks() {
        let text = "東京は日本の首都です。人口は約千四百万人です！本当ですか？".repeat(20);
        let chunks = check(&text, 100, 0);
        for c in &chunks[..chunks.len() - 1] {
            assert!(c.text.ends_with(['。', '！', '？']), "{:?}", c.text);
        }
        check(&text, 100, 30);
    }

    #[test]
    fn very_long_word_is_split_at_graphemes() {
        let text = "x".repeat(1000);
        let chunks = check(&text, 100, 20);
        assert!(chunks.iter().all(|c| c.text.len() <= 100));
        assert_eq!(chunks[1].overlap, 20);
        let text = format!("short words {} end", "ش".repeat(500));
        check(&text, 100, 0);
        check(&text, 100, 99);
    }

    #[test]
    fn prefers_headings_then_paragraphs_then_lines() {
        let para = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. ".repeat(2); // 114
        let text = format!(
            "# Shipping\n\n{para}\n\n## International\n\n{para}\n\nSecond paragraph here.\nA line.\n\n# Returns\n\n{para}"
        );
        let chunks = check(&text, 200, 0);
        let heads: Vec<&str> = chunks.iter().map(|c| c.heading.as_str()).collect();
        assert!(
            chunks[1].text.starts_with("## International"),
            "{chunks:#?}"
        );
        assert!(
            chunks.iter().any(|c| c.text.starts_with("# Returns")),
            "{chunks:#?}"
        );
        assert_eq!(heads[0], "Shipping");
        assert_eq!(heads[1], "Shipping › International");
        assert_eq!(*heads.last().unwrap(), "Returns");

        // paragraph break before line break before sentence end
        let p = "Alpha beta gamma delta. Epsilon zeta eta theta. ".repeat(2); // 96 chars
        let text = format!("{p}\n\n{p}\nLast line of text that is long enough to matter here.");
        let c = check(&text, 150, 0);
        assert!(c[0].text.ends_with("\n\n"), "{c:#?}");
        let text = format!("{p}{p}\n{p}");
        let c = check(&text, 250, 0);
        assert!(c[0].text.ends_with(". \n"), "{c:#?}");
        // sentence end preferred over a later word boundary
        let text = "One two three four five six seven eight nine ten. ".repeat(10);
        let c = check(&text, 100, 0);
        assert!(c[0].text.ends_with(". "), "{c:#?}");
    }

    #[test]
    fn heading_path_tracking() {
        let body = "text ".repeat(30);
        let text = format!(
            "intro {body}\n# A\n{body}\n## B\n{body}\n### B1\n{body}\n## C\n{body}\n# D\n{body}\n```\n# not a heading\n```\n{body}"
        );
        let chunks = check(&text, 100, 20);
        let paths: Vec<&str> = chunks.iter().map(|c| c.heading.as_str()).collect();
        assert_eq!(paths[0], "");
        for want in ["A", "A › B", "A › B › B1", "A › C", "D"] {
            assert!(paths.contains(&want), "{want} missing in {paths:?}");
        }
        assert!(!paths.iter().any(|p| p.contains("not a heading")));
        // chunks that start with a heading line carry that heading and have no
        // overlap from the previous section
        for c in &chunks {
            if c.text.starts_with("## B\n") {
                assert_eq!(c.heading, "A › B");
                assert_eq!(c.overlap, 0);
            }
        }
        // closing hashes are not part of the title
        let c = chunk("# Title ##\nbody", 100, 0);
        assert_eq!(c[0].heading, "Title");
    }

    #[test]
    fn overlap_starts_at_a_word() {
        let text = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu ".repeat(20);
        let chunks = check(&text, 100, 30);
        for c in &chunks[1..] {
            assert!(c.overlap > 0);
            let prev = text[..c.start].chars().next_back().unwrap();
            assert_eq!(prev, ' ', "overlap starts mid-word: {:?}", c.text);
        }
    }

    #[test]
    fn large_document_and_timing() {
        let mut rng = Rng(7);
        let mut text = String::new();
        while text.len() < 50_000 {
            text.push_str(&random_text(&mut rng, 50));
            text.push_str("\n\n");
        }
        for (size, overlap) in [(100, 0), (100, 50), (1000, 200), (4000, 400)] {
            check(&text, size, overlap);
        }

        // Timing print only (no assertion): a 2 KB document.
        let doc: String = "The parcel leaves our warehouse within two days. Returns are free.\n\n"
            .repeat(30)
            .chars()
            .take(2048)
            .collect();
        let fa = "می‌خواهم سفارشم را پس بدهم. کتاب‌ها را کی می‌فرستید؟\n".repeat(25);
        for (name, d) in [("ascii", &doc), ("persian", &fa)] {
            let n = 2000;
            let t = std::time::Instant::now();
            for _ in 0..n {
                std::hint::black_box(chunk(std::hint::black_box(d), 512, 64));
            }
            eprintln!(
                "chunk {name} {} bytes: {:?} per document",
                d.len(),
                t.elapsed() / n
            );
        }
    }
}
