//! Source formats: detection and parsing to normalized text.
//!
//! The ingest worker accepts five formats ([`Format`]). [`detect`] picks the
//! format of an object from its content type and name, and [`parse`] turns the
//! object's bytes into one or more [`Parsed`] documents whose `text` is what the
//! chunker splits.
//!
//! # Detection
//!
//! The content type (HTTP `Content-Type`, S3 metadata, …) is used first, with
//! parameters such as `; charset=utf-8` ignored and compared case-insensitively:
//!
//! | content type | format |
//! | --- | --- |
//! | `text/markdown`, `text/x-markdown` | Markdown |
//! | `text/plain` | Text |
//! | `text/html`, `application/xhtml+xml` | Html |
//! | `application/jsonl`, `application/x-jsonlines`, `application/jsonlines`, `application/x-ndjson`, `application/ndjson` | Jsonl |
//! | `application/pdf`, `application/x-pdf` | Pdf |
//!
//! When the content type is missing, is `application/octet-stream` /
//! `binary/octet-stream`, or is any other type not in the table, the extension
//! of the name's last path segment decides (case-insensitive): `.md`
//! `.markdown` → Markdown, `.txt` `.text` → Text, `.html` `.htm` → Html,
//! `.jsonl` `.ndjson` → Jsonl, `.pdf` → Pdf. Anything else is unsupported
//! (`None`).
//!
//! # Normalized text
//!
//! * **Text formats must be UTF-8.** A UTF-8 byte order mark is stripped. A
//!   UTF-16 (LE or BE) file that starts with its byte order mark is decoded;
//!   any other non-UTF-8 input is refused with [`ParseError::NotUtf8`].
//! * **Markdown and plain text**: the source unchanged except that CRLF and
//!   lone CR line endings become `\n` and trailing whitespace at the end of the
//!   document is trimmed. Markdown front matter (a `---` line at the very start,
//!   YAML-looking lines, a closing `---` or `...` line) is dropped. The Markdown
//!   title is the first level-1 ATX heading (`# Title`), else the first ATX
//!   heading of any level; headings inside fenced code blocks are ignored.
//!   Plain text has no title.
//! * **HTML**: the visible text with its block structure. `<h1>`…`<h6>` become
//!   lines `# `…`###### ` followed by the heading text; paragraphs and other
//!   block elements are separated by one blank line; `<li>`, `<tr>`, `<div>`,
//!   `<dt>`/`<dd>` and `<br>` start a new line (two `<br>` in a row make a blank
//!   line). List items are written as `- item`, indented by two spaces per level
//!   of nesting; table cells in a row are separated by ` | `. `<pre>` keeps its
//!   whitespace. Dropped: `<head>` (except `<title>`), `<script>`, `<style>`,
//!   `<noscript>`, `<template>`, `<iframe>`, `<object>`, `<svg>`, `<canvas>`,
//!   comments, and elements with the `hidden` attribute,
//!   `aria-hidden="true"` or an inline `display:none` style. Entities are decoded
//!   and runs of HTML whitespace (space, tab, CR, LF, FF) inside a block collapse
//!   to one space (a non-breaking space is kept). The title is `<title>`, else
//!   the text of the first `<h1>`.
//! * **PDF**: the text layer, page by page (pages separated by a blank line).
//!   Within a line, runs of whitespace and control characters collapse to one
//!   space and lines are trimmed; several blank lines collapse to one blank
//!   line. A PDF that cannot be parsed is [`ParseError::CorruptPdf`] (the
//!   extractor's panics are caught, so bad input never takes the worker down,
//!   although the default panic hook still prints a message to stderr), an
//!   encrypted PDF that does not open with the empty password is
//!   [`ParseError::EncryptedPdf`], and a PDF without any text (a scan) is
//!   [`ParseError::NoTextLayer`]. PDFs have no title (the caller uses the file
//!   name).
//! * **JSONL**: one document per non-blank line. The line must be a JSON
//!   object; the configured text field must hold a string (normalized like
//!   plain text). Field names are top-level keys or dotted paths into nested
//!   objects (`meta.lang`); a top-level key that itself contains the dots wins.
//!   The title field (string or number) gives the title, the id field (string
//!   or number) gives `part`, else `part` is `line-<n>` with the 1-based line
//!   number. Each configured metadata field present in the record (any JSON
//!   value, including `null`) is copied into `metadata` under the configured
//!   name. A bad line fails only its own record; ids are not checked for
//!   uniqueness.
//!
//! No Unicode normalization is applied: text is kept as in the source (for
//! example the Persian zero-width non-joiner U+200C survives byte for byte).

use serde_json::{Map, Value};

use crate::chunk::fence_marker;

/// A supported source format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    Markdown,
    Text,
    Html,
    Jsonl,
    Pdf,
}

impl Format {
    /// Stable lowercase name: `"markdown"`, `"text"`, `"html"`, `"jsonl"`, `"pdf"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Markdown => "markdown",
            Format::Text => "text",
            Format::Html => "html",
            Format::Jsonl => "jsonl",
            Format::Pdf => "pdf",
        }
    }

    /// Format for a content type (parameters ignored), `None` when unknown.
    pub fn from_content_type(content_type: &str) -> Option<Format> {
        let essence = content_type.split(';').next().unwrap_or("").trim();
        let essence = essence.to_ascii_lowercase();
        Some(match essence.as_str() {
            "text/markdown" | "text/x-markdown" => Format::Markdown,
            "text/plain" => Format::Text,
            "text/html" | "application/xhtml+xml" => Format::Html,
            "application/jsonl"
            | "application/x-jsonlines"
            | "application/jsonlines"
            | "application/x-ndjson"
            | "application/ndjson" => Format::Jsonl,
            "application/pdf" | "application/x-pdf" => Format::Pdf,
            _ => return None,
        })
    }

    /// Format for a file name's extension (case-insensitive), `None` when unknown.
    pub fn from_name(name: &str) -> Option<Format> {
        let file = name.rsplit(['/', '\\']).next().unwrap_or(name);
        let (stem, ext) = file.rsplit_once('.')?;
        if stem.is_empty() {
            // ".md" is a hidden file without an extension.
            return None;
        }
        Some(match ext.to_ascii_lowercase().as_str() {
            "md" | "markdown" => Format::Markdown,
            "txt" | "text" => Format::Text,
            "html" | "htm" => Format::Html,
            "jsonl" | "ndjson" => Format::Jsonl,
            "pdf" => Format::Pdf,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Detects the format from the content type when it is one we know, else from
/// the name's extension (see the module docs). `None` = unsupported.
pub fn detect(name: &str, content_type: Option<&str>) -> Option<Format> {
    content_type
        .and_then(Format::from_content_type)
        .or_else(|| Format::from_name(name))
}

/// JSONL settings. Field names are top-level keys or dotted paths into nested
/// objects (`"meta.lang"`).
#[derive(Clone, Debug, Default)]
pub struct JsonlFields {
    /// Field holding the text (required; must be a string).
    pub text: String,
    /// Optional field holding the title.
    pub title: Option<String>,
    /// Optional field holding the record id (string or number).
    pub id: Option<String>,
    /// Fields copied into [`Parsed::metadata`] when present.
    pub metadata: Vec<String>,
}

/// One document ready for chunking.
#[derive(Clone, Debug, PartialEq)]
pub struct Parsed {
    /// `""` for a whole file; for JSONL the record's id (from the id field) or
    /// `"line-<n>"` (1-based line number).
    pub part: String,
    /// The first heading (Markdown), `<title>` or first `<h1>` (HTML), the
    /// title field (JSONL), else `""` (the caller falls back to the file name).
    pub title: String,
    /// Normalized text (see the module docs). Never empty or whitespace-only.
    pub text: String,
    /// Metadata: JSONL metadata fields present in the record; empty otherwise.
    pub metadata: Map<String, Value>,
}

/// Why an object (or one JSONL record) could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A text format that is not UTF-8 (nor UTF-16 with a byte order mark).
    #[error("text is not valid UTF-8")]
    NotUtf8,
    /// A PDF that could not be parsed.
    #[error("corrupt PDF: {0}")]
    CorruptPdf(String),
    /// A PDF that is encrypted with a password we do not have.
    #[error("encrypted PDF")]
    EncryptedPdf,
    /// A PDF whose pages have no extractable text (e.g. a scan).
    #[error("PDF has no text layer")]
    NoTextLayer,
    /// A JSONL line that is not a JSON object or lacks the text field.
    #[error("invalid JSONL at line {line}: {message}")]
    Jsonl { line: usize, message: String },
    /// No text at all after parsing.
    #[error("no text")]
    Empty,
    /// A NUL character (U+0000), which the knowledge store cannot hold.
    #[error("the text holds a NUL character (U+0000)")]
    Nul,
}

impl ParseError {
    /// Stable short label for metrics and status.
    pub fn reason(&self) -> &'static str {
        match self {
            ParseError::NotUtf8 => "invalid_encoding",
            ParseError::CorruptPdf(_) => "corrupt_pdf",
            ParseError::EncryptedPdf => "encrypted_pdf",
            ParseError::NoTextLayer => "no_text_layer",
            ParseError::Jsonl { .. } => "invalid_jsonl",
            ParseError::Empty => "empty",
            ParseError::Nul => "nul",
        }
    }
}

/// Parses `bytes` as `format`. For JSONL there is one result per non-blank
/// line (and a single [`ParseError::Empty`] when there is no such line); for
/// the other formats exactly one result.
pub fn parse(format: Format, bytes: &[u8], jsonl: &JsonlFields) -> Vec<Result<Parsed, ParseError>> {
    match format {
        Format::Markdown => vec![parse_markdown(bytes)],
        Format::Text => vec![parse_text(bytes)],
        Format::Html => vec![parse_html(bytes)],
        Format::Pdf => vec![parse_pdf(bytes)],
        Format::Jsonl => parse_jsonl(bytes, jsonl),
    }
}

fn whole(title: String, text: String) -> Result<Parsed, ParseError> {
    if text.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    Ok(Parsed {
        part: String::new(),
        title,
        text,
        metadata: Map::new(),
    })
}

// ---------------------------------------------------------------------------
// Decoding and line endings

/// Decodes a text file: UTF-8 (BOM stripped) or UTF-16 with a BOM.
fn decode(bytes: &[u8]) -> Result<std::borrow::Cow<'_, str>, ParseError> {
    use std::borrow::Cow;
    if let Some(rest) = bytes.strip_prefix(b"\xEF\xBB\xBF") {
        return std::str::from_utf8(rest)
            .map(Cow::Borrowed)
            .map_err(|_| ParseError::NotUtf8);
    }
    let utf16 = |rest: &[u8], be: bool| -> Result<Cow<'_, str>, ParseError> {
        if !rest.len().is_multiple_of(2) {
            return Err(ParseError::NotUtf8);
        }
        let units = rest.chunks_exact(2).map(|p| {
            if be {
                u16::from_be_bytes([p[0], p[1]])
            } else {
                u16::from_le_bytes([p[0], p[1]])
            }
        });
        char::decode_utf16(units)
            .collect::<Result<String, _>>()
            .map(Cow::Owned)
            .map_err(|_| ParseError::NotUtf8)
    };
    if let Some(rest) = bytes.strip_prefix(b"\xFF\xFE") {
        return utf16(rest, false);
    }
    if let Some(rest) = bytes.strip_prefix(b"\xFE\xFF") {
        return utf16(rest, true);
    }
    std::str::from_utf8(bytes)
        .map(Cow::Borrowed)
        .map_err(|_| ParseError::NotUtf8)
}

/// CRLF and lone CR become LF; trailing whitespace of the whole text trimmed.
fn normalize_text(s: &str) -> String {
    let s = s.trim_end();
    if !s.contains('\r') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\r' {
            if chars.peek() == Some(&'\n') {
                chars.next();
            }
            out.push('\n');
        } else {
            out.push(c);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Markdown and plain text

fn parse_text(bytes: &[u8]) -> Result<Parsed, ParseError> {
    let text = normalize_text(&decode(bytes)?);
    whole(String::new(), text)
}

fn parse_markdown(bytes: &[u8]) -> Result<Parsed, ParseError> {
    let decoded = decode(bytes)?;
    let text = normalize_text(&decoded);
    let text = match front_matter_len(&text) {
        Some(n) => text[n..].trim_start_matches('\n').to_owned(),
        None => text,
    };
    let title = markdown_title(&text);
    whole(title, text)
}

/// Length in bytes of a YAML front matter block at the very start, if any.
fn front_matter_len(text: &str) -> Option<usize> {
    let rest = text.strip_prefix("---\n")?;
    let mut offset = 4;
    for line in rest.split_inclusive('\n') {
        let bare = line.trim_end_matches('\n');
        if bare == "---" || bare == "..." {
            return Some(offset + line.len());
        }
        let yamlish =
            bare.trim().is_empty() || bare.starts_with([' ', '\t', '-', '#']) || bare.contains(':');
        if !yamlish {
            return None;
        }
        offset += line.len();
    }
    None
}

/// ATX heading: up to 3 spaces, 1–6 `#`, then space/tab or end of line.
/// Returns (level, text without the closing `#` sequence).
fn atx_heading(line: &str) -> Option<(usize, &str)> {
    let trimmed = line.trim_start_matches(' ');
    if line.len() - trimmed.len() > 3 {
        return None;
    }
    let level = trimmed.bytes().take_while(|&b| b == b'#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let rest = &trimmed[level..];
    if !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
        return None;
    }
    let mut content = rest.trim();
    let without_closing = content.trim_end_matches('#');
    if without_closing.is_empty() || without_closing.ends_with([' ', '\t']) {
        content = without_closing.trim_end();
    }
    Some((level, content))
}

/// First level-1 ATX heading, else the first heading of any level, outside
/// fenced code blocks.
fn markdown_title(text: &str) -> String {
    let mut fence: Option<(u8, usize)> = None;
    let mut first_any: Option<&str> = None;
    for line in text.lines() {
        if let Some((ch, n)) = fence_marker(line) {
            match fence {
                None => fence = Some((ch, n)),
                Some((open, len)) if open == ch && n >= len => fence = None,
                Some(_) => {}
            }
            continue;
        }
        if fence.is_some() {
            continue;
        }
        if let Some((level, content)) = atx_heading(line) {
            if content.is_empty() {
                continue;
            }
            if level == 1 {
                return content.to_owned();
            }
            first_any.get_or_insert(content);
        }
    }
    first_any.unwrap_or("").to_owned()
}

// ---------------------------------------------------------------------------
// HTML

fn parse_html(bytes: &[u8]) -> Result<Parsed, ParseError> {
    let source = decode(bytes)?;
    let (title, text) = html_to_text(&source);
    whole(title, text)
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Break {
    None,
    Space,
    Line,
    Paragraph,
}

/// Accumulates visible text with collapsed whitespace and pending breaks.
struct TextSink {
    out: String,
    pending: Break,
    /// Written before the next text (a heading's `# ` or a list bullet).
    prefix: String,
    /// Set by `<br>` so that a second one makes a blank line.
    after_br: bool,
}

impl TextSink {
    fn request(&mut self, b: Break) {
        self.pending = self.pending.max(b);
    }

    fn flush_pending(&mut self) {
        if !self.out.is_empty() {
            match self.pending {
                Break::None => {}
                Break::Space => {
                    if !self.out.ends_with([' ', '\n']) && !self.prefix.starts_with(' ') {
                        self.out.push(' ');
                    }
                }
                Break::Line => self.out.push('\n'),
                Break::Paragraph => self.out.push_str("\n\n"),
            }
        }
        self.pending = Break::None;
        self.after_br = false;
        if !self.prefix.is_empty() {
            self.out.push_str(&self.prefix);
            self.prefix.clear();
        }
    }

    /// Text with HTML whitespace collapsed.
    fn text(&mut self, s: &str) {
        for (i, word) in s.split(is_html_space).enumerate() {
            if i > 0 {
                self.request(Break::Space);
            }
            if !word.is_empty() {
                self.flush_pending();
                self.out.push_str(word);
            }
        }
    }

    /// Preformatted text: kept as is, line endings normalized.
    fn pre(&mut self, s: &str) {
        let s = s.replace("\r\n", "\n").replace('\r', "\n");
        for (i, line) in s.split('\n').enumerate() {
            if i > 0 {
                self.request(Break::Line);
            }
            if !line.is_empty() {
                self.flush_pending();
                self.out.push_str(line);
            }
        }
    }
}

fn is_html_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0C')
}

fn collapse_ws(s: &str) -> String {
    s.split(is_html_space)
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn html_to_text(source: &str) -> (String, String) {
    let doc = scraper::Html::parse_document(source);
    let mut sink = TextSink {
        out: String::new(),
        pending: Break::None,
        prefix: String::new(),
        after_br: false,
    };
    let mut title: Option<String> = None;
    let mut first_h1: Option<String> = None;
    let mut h1_buf: Option<String> = None;
    let mut heading_depth = 0usize;
    let mut pre_depth = 0usize;
    let mut list_depth = 0usize;
    let mut cell_in_row = false;

    // Iterative depth-first walk (deeply nested input must not overflow the stack).
    let root = doc.tree.root();
    let mut node = root;
    'walk: loop {
        // ---- open `node`
        let mut descend = true;
        match node.value() {
            scraper::Node::Text(t) => {
                if let Some(buf) = h1_buf.as_mut() {
                    buf.push_str(t);
                }
                if pre_depth > 0 {
                    sink.pre(t);
                } else {
                    sink.text(t);
                }
            }
            scraper::Node::Element(el) => {
                let name = el.name();
                let hidden = el.attr("hidden").is_some()
                    || el
                        .attr("aria-hidden")
                        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
                    || el.attr("style").is_some_and(|s| {
                        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
                        s.to_ascii_lowercase().contains("display:none")
                    });
                if name == "title" {
                    if title.is_none() {
                        let t = text_of(node.descendants().map(|d| d.value()));
                        if !t.is_empty() {
                            title = Some(t);
                        }
                    }
                    descend = false;
                } else if hidden
                    || matches!(
                        name,
                        "head"
                            | "script"
                            | "style"
                            | "noscript"
                            | "template"
                            | "iframe"
                            | "object"
                            | "embed"
                            | "svg"
                            | "math"
                            | "canvas"
                            | "select"
                            | "datalist"
                    )
                {
                    // `<head>`: only its `<title>` matters.
                    if name == "head" && title.is_none() {
                        for d in node.descendants() {
                            if let scraper::Node::Element(e) = d.value()
                                && e.name() == "title"
                            {
                                let t = text_of(d.descendants().map(|x| x.value()));
                                if !t.is_empty() {
                                    title = Some(t);
                                    break;
                                }
                            }
                        }
                    }
                    descend = false;
                } else {
                    open_element(
                        &mut sink,
                        name,
                        &mut heading_depth,
                        &mut pre_depth,
                        &mut list_depth,
                        &mut cell_in_row,
                    );
                    if name == "h1" && first_h1.is_none() && h1_buf.is_none() {
                        h1_buf = Some(String::new());
                    }
                }
            }
            scraper::Node::Document | scraper::Node::Fragment => {}
            _ => descend = false, // comments, doctype, processing instructions
        }

        if descend && let Some(child) = node.first_child() {
            node = child;
            continue;
        }
        // ---- close `node` and climb until a sibling exists
        loop {
            if descend && let scraper::Node::Element(el) = node.value() {
                let name = el.name();
                close_element(
                    &mut sink,
                    name,
                    &mut heading_depth,
                    &mut pre_depth,
                    &mut list_depth,
                    &mut cell_in_row,
                );
                if name == "h1"
                    && let Some(buf) = h1_buf.take()
                {
                    let t = collapse_ws(&buf);
                    if !t.is_empty() {
                        first_h1 = Some(t);
                    }
                }
            }
            descend = true; // ancestors were all descended into
            if node == root {
                break 'walk;
            }
            if let Some(sib) = node.next_sibling() {
                node = sib;
                continue 'walk;
            }
            match node.parent() {
                Some(p) => node = p,
                None => break 'walk,
            }
        }
    }

    let text = sink.out.trim_end().to_owned();
    (title.or(first_h1).unwrap_or_default(), text)
}

/// The text of `nodes` (an element's descendants), whitespace collapsed (a `<title>`).
fn text_of<'a>(nodes: impl Iterator<Item = &'a scraper::Node>) -> String {
    let mut t = String::new();
    for d in nodes {
        if let scraper::Node::Text(x) = d {
            t.push_str(&x[..]);
        }
    }
    collapse_ws(&t)
}

fn heading_level(name: &str) -> Option<usize> {
    match name {
        "h1" => Some(1),
        "h2" => Some(2),
        "h3" => Some(3),
        "h4" => Some(4),
        "h5" => Some(5),
        "h6" => Some(6),
        _ => None,
    }
}

fn is_paragraph_block(name: &str) -> bool {
    matches!(
        name,
        "p" | "blockquote"
            | "pre"
            | "table"
            | "section"
            | "article"
            | "header"
            | "footer"
            | "main"
            | "aside"
            | "nav"
            | "figure"
            | "hr"
            | "dl"
            | "address"
            | "details"
            | "form"
            | "fieldset"
            | "hgroup"
            | "center"
            | "dialog"
    )
}

fn is_line_block(name: &str) -> bool {
    matches!(
        name,
        "div"
            | "li"
            | "tr"
            | "dt"
            | "dd"
            | "caption"
            | "figcaption"
            | "summary"
            | "legend"
            | "thead"
            | "tbody"
            | "tfoot"
            | "option"
            | "body"
            | "html"
    )
}

fn open_element(
    sink: &mut TextSink,
    name: &str,
    heading_depth: &mut usize,
    pre_depth: &mut usize,
    list_depth: &mut usize,
    cell_in_row: &mut bool,
) {
    if let Some(level) = heading_level(name) {
        if *heading_depth == 0 {
            sink.request(Break::Paragraph);
            sink.prefix = format!("{} ", "#".repeat(level));
        }
        *heading_depth += 1;
        return;
    }
    if *heading_depth > 0 {
        // Inside a heading everything stays on the heading line.
        if name == "br" || is_paragraph_block(name) || is_line_block(name) {
            sink.request(Break::Space);
        }
        return;
    }
    match name {
        "br" => {
            if sink.after_br {
                sink.request(Break::Paragraph);
            } else {
                sink.request(Break::Line);
            }
            sink.after_br = true;
        }
        "ul" | "ol" | "menu" => {
            sink.request(if *list_depth == 0 {
                Break::Paragraph
            } else {
                Break::Line
            });
            *list_depth += 1;
        }
        "li" => {
            sink.request(Break::Line);
            sink.prefix = format!("{}- ", "  ".repeat(list_depth.saturating_sub(1)));
        }
        "tr" => {
            sink.request(Break::Line);
            *cell_in_row = false;
        }
        "td" | "th" => {
            if *cell_in_row {
                sink.flush_pending_cell();
            }
            *cell_in_row = true;
        }
        "pre" | "textarea" => {
            sink.request(Break::Paragraph);
            *pre_depth += 1;
        }
        _ if is_paragraph_block(name) => sink.request(Break::Paragraph),
        _ if is_line_block(name) => sink.request(Break::Line),
        _ => {}
    }
}

fn close_element(
    sink: &mut TextSink,
    name: &str,
    heading_depth: &mut usize,
    pre_depth: &mut usize,
    list_depth: &mut usize,
    cell_in_row: &mut bool,
) {
    if heading_level(name).is_some() {
        *heading_depth = heading_depth.saturating_sub(1);
        if *heading_depth == 0 {
            sink.prefix.clear(); // an empty heading writes nothing
            sink.request(Break::Paragraph);
        }
        return;
    }
    if *heading_depth > 0 {
        if is_paragraph_block(name) || is_line_block(name) {
            sink.request(Break::Space);
        }
        return;
    }
    match name {
        "ul" | "ol" | "menu" => {
            *list_depth = list_depth.saturating_sub(1);
            sink.request(if *list_depth == 0 {
                Break::Paragraph
            } else {
                Break::Line
            });
        }
        "li" => {
            sink.prefix.clear();
            sink.request(Break::Line);
        }
        "tr" => {
            *cell_in_row = false;
            sink.request(Break::Line);
        }
        "pre" | "textarea" => {
            *pre_depth = pre_depth.saturating_sub(1);
            sink.request(Break::Paragraph);
        }
        _ if is_paragraph_block(name) => sink.request(Break::Paragraph),
        _ if is_line_block(name) => sink.request(Break::Line),
        _ => {}
    }
}

impl TextSink {
    /// Separates table cells with ` | ` (written lazily, only before more text
    /// on the same line).
    fn flush_pending_cell(&mut self) {
        if self.pending <= Break::Space && !self.out.is_empty() && !self.out.ends_with('\n') {
            self.pending = Break::None;
            self.prefix = " | ".to_owned();
        }
    }
}

// ---------------------------------------------------------------------------
// PDF

fn parse_pdf(bytes: &[u8]) -> Result<Parsed, ParseError> {
    // pdf-extract (and lopdf below it) may panic on malformed input.
    let result = std::panic::catch_unwind(|| pdf_extract::extract_text_from_mem_by_pages(bytes));
    let pages = match result {
        Ok(Ok(pages)) => pages,
        Ok(Err(pdf_extract::OutputError::PdfError(pdf_extract::Error::Decryption(_)))) => {
            return Err(ParseError::EncryptedPdf);
        }
        Ok(Err(e)) => return Err(ParseError::CorruptPdf(e.to_string())),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "extractor panicked".to_owned());
            return Err(ParseError::CorruptPdf(msg));
        }
    };
    let text = pages
        .iter()
        .map(|p| normalize_pdf_page(p))
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n");
    if text.is_empty() {
        return Err(ParseError::NoTextLayer);
    }
    whole(String::new(), text)
}

/// Collapses whitespace runs within lines, trims lines, keeps at most one
/// blank line between paragraphs, trims the page.
fn normalize_pdf_page(page: &str) -> String {
    let mut out = String::with_capacity(page.len());
    let mut blank_pending = false;
    for line in page.split(['\n', '\r']) {
        let mut collapsed = String::with_capacity(line.len());
        for word in line.split(|c: char| c.is_whitespace() || c.is_control()) {
            if word.is_empty() {
                continue;
            }
            if !collapsed.is_empty() {
                collapsed.push(' ');
            }
            collapsed.push_str(word);
        }
        if collapsed.is_empty() {
            blank_pending = !out.is_empty();
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank_pending { "\n\n" } else { "\n" });
        }
        blank_pending = false;
        out.push_str(&collapsed);
    }
    out
}

// ---------------------------------------------------------------------------
// JSONL

fn parse_jsonl(bytes: &[u8], fields: &JsonlFields) -> Vec<Result<Parsed, ParseError>> {
    // UTF-16 (with BOM) is decoded as a whole; otherwise lines are decoded one
    // by one so that one bad line fails only its record.
    let owned;
    let bytes: &[u8] = if bytes.starts_with(b"\xFF\xFE") || bytes.starts_with(b"\xFE\xFF") {
        match decode(bytes) {
            Ok(s) => {
                owned = s.into_owned();
                owned.as_bytes()
            }
            Err(e) => return vec![Err(e)],
        }
    } else {
        bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
    };
    let mut out = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line_no = i + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        out.push(jsonl_record(raw, line_no, fields));
    }
    if out.is_empty() {
        out.push(Err(ParseError::Empty));
    }
    out
}

fn jsonl_record(raw: &[u8], line: usize, fields: &JsonlFields) -> Result<Parsed, ParseError> {
    let bad = |message: String| ParseError::Jsonl { line, message };
    let Ok(raw) = std::str::from_utf8(raw) else {
        return Err(bad("line is not valid UTF-8".to_owned()));
    };
    let value: Value = serde_json::from_str(raw).map_err(|e| bad(e.to_string()))?;
    let Value::Object(obj) = value else {
        return Err(bad("line is not a JSON object".to_owned()));
    };
    let text = match lookup(&obj, &fields.text) {
        Some(Value::String(s)) => normalize_text(s),
        Some(_) => return Err(bad(format!("field `{}` is not a string", fields.text))),
        None => return Err(bad(format!("missing text field `{}`", fields.text))),
    };
    if text.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    let title = fields
        .title
        .as_deref()
        .and_then(|f| lookup(&obj, f))
        .and_then(scalar_string)
        .map(|t| t.trim().to_owned())
        .unwrap_or_default();
    let part = fields
        .id
        .as_deref()
        .and_then(|f| lookup(&obj, f))
        .and_then(scalar_string)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("line-{line}"));
    let mut metadata = Map::new();
    for f in &fields.metadata {
        if let Some(v) = lookup(&obj, f) {
            metadata.insert(f.clone(), v.clone());
        }
    }
    Ok(Parsed {
        part,
        title,
        text,
        metadata,
    })
}

/// A top-level key, else a dotted path through nested objects.
fn lookup<'a>(obj: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if path.is_empty() {
        return None;
    }
    if let Some(v) = obj.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut cur = obj.get(parts.next()?)?;
    for p in parts {
        cur = cur.as_object()?.get(p)?;
    }
    Some(cur)
}

fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Test support: a minimal PDF with a text layer (Helvetica, one line of ASCII text per entry,
/// one slice per page), built by hand.
#[doc(hidden)]
pub fn sample_pdf(pages: &[&[&str]]) -> Vec<u8> {
    let mut objects: Vec<Vec<u8>> = Vec::new();
    let kids: Vec<String> = (0..pages.len())
        .map(|i| format!("{} 0 R", 4 + 2 * i))
        .collect();
    objects.push(b"<< /Type /Catalog /Pages 2 0 R >>".to_vec());
    objects.push(
        format!(
            "<< /Type /Pages /Kids [{}] /Count {} >>",
            kids.join(" "),
            pages.len()
        )
        .into_bytes(),
    );
    objects.push(
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
            .to_vec(),
    );
    for (i, lines) in pages.iter().enumerate() {
        objects.push(
            format!(
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] \
                 /Resources << /Font << /F1 3 0 R >> >> /Contents {} 0 R >>",
                5 + 2 * i
            )
            .into_bytes(),
        );
        let mut content = String::new();
        if !lines.is_empty() {
            content.push_str("BT /F1 12 Tf 72 720 Td 14 TL\n");
            for l in *lines {
                content.push_str(&format!("({l}) Tj T*\n"));
            }
            content.push_str("ET");
        }
        objects.push(
            format!(
                "<< /Length {} >>\nstream\n{content}\nendstream",
                content.len()
            )
            .into_bytes(),
        );
    }
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, o) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n", i + 1).as_bytes());
        out.extend_from_slice(o);
        out.extend_from_slice(b"\nendobj\n");
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for off in offsets {
        out.extend_from_slice(format!("{off:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(format: Format, bytes: &[u8]) -> Result<Parsed, ParseError> {
        let mut r = parse(format, bytes, &JsonlFields::default());
        assert_eq!(r.len(), 1);
        r.pop().unwrap()
    }

    #[test]
    fn detection_table() {
        use Format::*;
        let cases: &[(&str, Option<&str>, Option<Format>)] = &[
            ("a.md", None, Some(Markdown)),
            ("dir/A.MARKDOWN", None, Some(Markdown)),
            ("notes.txt", None, Some(Text)),
            ("notes.text", None, Some(Text)),
            ("page.HTM", None, Some(Html)),
            ("page.html", None, Some(Html)),
            ("rows.jsonl", None, Some(Jsonl)),
            ("rows.ndjson", None, Some(Jsonl)),
            ("scan.PDF", None, Some(Pdf)),
            ("image.png", None, None),
            ("noext", None, None),
            (".md", None, None),
            ("dir.md/file", None, None),
            // content type wins when known
            ("file.txt", Some("text/html; charset=utf-8"), Some(Html)),
            ("x", Some("Text/Markdown"), Some(Markdown)),
            ("x", Some("application/pdf"), Some(Pdf)),
            ("x", Some("application/x-ndjson"), Some(Jsonl)),
            ("x", Some("text/plain;charset=UTF-8"), Some(Text)),
            ("x.md", Some("application/xhtml+xml"), Some(Html)),
            // unknown or generic content types fall back to the extension
            ("a.pdf", Some("application/octet-stream"), Some(Pdf)),
            ("a.md", Some("binary/octet-stream"), Some(Markdown)),
            ("a.md", Some("image/png"), Some(Markdown)),
            ("a.bin", Some("application/octet-stream"), None),
            ("a.bin", Some("image/png"), None),
            ("a.bin", Some(""), None),
        ];
        for (name, ct, want) in cases {
            assert_eq!(detect(name, *ct), *want, "{name} {ct:?}");
        }
        assert_eq!(Format::Jsonl.as_str(), "jsonl");
        assert_eq!(Format::Markdown.to_string(), "markdown");
    }

    #[test]
    fn markdown_and_text_normalization() {
        let p = one(
            Format::Markdown,
            b"\xEF\xBB\xBF## Sub\r\n\r\n# Title #\r\nBody  text\r\n\r\n  \r\n",
        )
        .unwrap();
        assert_eq!(p.text, "## Sub\n\n# Title #\nBody  text");
        assert_eq!(p.title, "Title");
        assert_eq!(p.part, "");
        assert!(p.metadata.is_empty());

        let p = one(Format::Text, b"line one\rline two\r\n# not a title\n\n").unwrap();
        assert_eq!(p.text, "line one\nline two\n# not a title");
        assert_eq!(p.title, "");

        // front matter dropped; headings in code fences are not titles
        let p = one(
            Format::Markdown,
            b"---\ntitle: x\ntags:\n  - a\n---\n\n```sh\n# comment\n```\n### Only h3\ntext",
        )
        .unwrap();
        assert_eq!(p.text, "```sh\n# comment\n```\n### Only h3\ntext");
        assert_eq!(p.title, "Only h3");
        // a thematic break at the start is not front matter
        let p = one(Format::Markdown, b"---\nJust prose here.\n---\nmore").unwrap();
        assert!(p.text.starts_with("---\nJust prose"));

        // Persian with ZWNJ survives byte for byte (no normalization)
        let fa = "می‌خواهم سفارشم را پس بدهم. کتاب‌ها را کی می‌فرستید؟ e\u{301}";
        assert_eq!(one(Format::Text, fa.as_bytes()).unwrap().text, fa);

        // UTF-16 with BOM is decoded
        let mut utf16 = vec![0xFF, 0xFE];
        for u in "héllo".encode_utf16() {
            utf16.extend_from_slice(&u.to_le_bytes());
        }
        assert_eq!(one(Format::Text, &utf16).unwrap().text, "héllo");

        assert_eq!(
            one(Format::Text, b"caf\xE9").unwrap_err(),
            ParseError::NotUtf8
        );
        assert_eq!(
            one(Format::Markdown, b"\xFF\xFEa").unwrap_err(),
            ParseError::NotUtf8
        );
        assert_eq!(
            one(Format::Html, b"<p>\xC3</p>").unwrap_err().reason(),
            "invalid_encoding"
        );
        assert_eq!(
            one(Format::Text, b" \r\n\t").unwrap_err(),
            ParseError::Empty
        );
        assert_eq!(one(Format::Markdown, b"").unwrap_err().reason(), "empty");
    }

    #[test]
    fn html_structure() {
        let html = r#"<!DOCTYPE html><html><head><title> Shop &amp;
            Co </title><style>body { color: red }</style>
            <script>var x = "<p>no</p>";</script><meta name="x" content="y"></head>
            <body><!-- a comment --><nav hidden>Menu</nav>
            <h1>Shipping   &amp; <em>Returns</em></h1>
            <p>We ship   in <b>two</b>
            days.<br>Really&nbsp;fast.</p>
            <ul><li>One</li><li>Two<ul><li>Two.a</li></ul></li></ul>
            <h2>Costs</h2>
            <table><tr><th>Zone</th><th>Price</th></tr><tr><td>EU</td> <td>5 &euro;</td></tr></table>
            <div style="display: none">secret</div><noscript>enable js</noscript>
            <template><p>tpl</p></template><span aria-hidden="true">icon</span>
            <div>Block one</div><div>Block two</div>
            <pre>  keep
   this</pre>
            <p>می‌خواهم &lt;b&gt;</p></body></html>"#;
        let p = one(Format::Html, html.as_bytes()).unwrap();
        assert_eq!(p.title, "Shop & Co");
        assert_eq!(
            p.text,
            "# Shipping & Returns\n\n\
             We ship in two days.\nReally\u{a0}fast.\n\n\
             - One\n- Two\n  - Two.a\n\n\
             ## Costs\n\n\
             Zone | Price\nEU | 5 €\n\n\
             Block one\nBlock two\n\n  keep\n   this\n\n\
             می‌خواهم <b>"
        );
        for dropped in [
            "Menu",
            "secret",
            "enable js",
            "tpl",
            "icon",
            "color",
            "var x",
            "comment",
        ] {
            assert!(!p.text.contains(dropped), "{dropped}");
        }

        // title from the first h1 when there is no <title>
        let p = one(
            Format::Html,
            b"<h2>Sub</h2><h1>Main <br>title</h1><h1>Other</h1>",
        )
        .unwrap();
        assert_eq!(p.title, "Main title");
        assert_eq!(p.text, "## Sub\n\n# Main title\n\n# Other");

        assert_eq!(
            one(
                Format::Html,
                b"<html><head><title>t</title></head><body> <script>x</script></body></html>"
            )
            .unwrap_err(),
            ParseError::Empty
        );
        // deep nesting does not overflow the stack
        let deep = format!("{}text{}", "<div>".repeat(3_000), "</div>".repeat(3_000));
        assert_eq!(one(Format::Html, deep.as_bytes()).unwrap().text, "text");
    }

    #[test]
    fn jsonl_records() {
        let input = "{\"id\": \"a1\", \"body\": \"Hello\\r\\nworld \", \"title\": \" T \", \"meta\": {\"lang\": \"fa\"}, \"tags\": [\"x\"]}\n\
                     \r\n\
                     not json\n\
                     {\"id\": 7, \"body\": \"Second\", \"tags\": null}\r\n\
                     {\"body\": 5}\n\
                     {\"other\": \"x\"}\n\
                     [1, 2]\n\
                     {\"body\": \"no id\", \"meta.lang\": \"top\", \"title\": 3}\n\
                     {\"id\": \"\", \"body\": \"  \"}\n\
                     \n";
        let fields = JsonlFields {
            text: "body".into(),
            title: Some("title".into()),
            id: Some("id".into()),
            metadata: vec!["meta.lang".into(), "tags".into()],
        };
        let mut bytes = b"\xEF\xBB\xBF".to_vec();
        bytes.extend_from_slice(input.as_bytes());
        bytes.extend_from_slice(b"{\"body\": \"bad \xFF\"}\n");
        let r = parse(Format::Jsonl, &bytes, &fields);
        assert_eq!(r.len(), 9);

        let a = r[0].as_ref().unwrap();
        assert_eq!(a.part, "a1");
        assert_eq!(a.title, "T");
        assert_eq!(a.text, "Hello\nworld");
        assert_eq!(
            serde_json::Value::Object(a.metadata.clone()),
            json!({"meta.lang": "fa", "tags": ["x"]})
        );
        let line = |i: usize| match &r[i] {
            Err(ParseError::Jsonl { line, .. }) => *line,
            other => panic!("record {i}: {other:?}"),
        };
        assert_eq!(line(1), 3);
        let b = r[2].as_ref().unwrap();
        assert_eq!(
            (b.part.as_str(), b.text.as_str(), b.title.as_str()),
            ("7", "Second", "")
        );
        assert_eq!(
            serde_json::Value::Object(b.metadata.clone()),
            json!({"tags": null})
        );
        assert_eq!(line(3), 5);
        assert_eq!(line(4), 6);
        assert_eq!(line(5), 7);
        let c = r[6].as_ref().unwrap();
        assert_eq!(c.part, "line-8");
        assert_eq!(c.title, "3");
        assert_eq!(
            serde_json::Value::Object(c.metadata.clone()),
            json!({"meta.lang": "top"})
        );
        assert_eq!(r[7], Err(ParseError::Empty));
        assert_eq!(line(8), 11);
        assert_eq!(r[8].as_ref().unwrap_err().reason(), "invalid_jsonl");

        // no records at all
        assert_eq!(
            parse(Format::Jsonl, b"\n \n", &fields),
            vec![Err(ParseError::Empty)]
        );
    }

    #[test]
    fn pdf_text_layer() {
        let pdf = sample_pdf(&[
            &["Shipping policy", "We ship    within two days."],
            &[],
            &["Returns are free."],
        ]);
        let p = one(Format::Pdf, &pdf).unwrap();
        assert!(p.text.contains("Shipping policy"), "{:?}", p.text);
        assert!(p.text.contains("We ship within two days."), "{:?}", p.text);
        assert!(p.text.ends_with("Returns are free."), "{:?}", p.text);
        assert!(p.text.contains("days.\n\nReturns"), "{:?}", p.text);
        assert!(!p.text.contains("  "));
        assert_eq!(p.title, "");

        let scan = sample_pdf(&[&[], &[]]);
        assert_eq!(
            one(Format::Pdf, &scan).unwrap_err(),
            ParseError::NoTextLayer
        );
    }

    #[test]
    fn corrupt_pdf_never_panics() {
        let pdf = sample_pdf(&[&["Hello world"]]);
        let mut inputs: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"not a pdf at all".to_vec(),
            b"%PDF-1.4\n".to_vec(),
            pdf[..pdf.len() / 2].to_vec(),
            pdf[..40].to_vec(),
        ];
        // bytes flipped in the middle of the body
        let mut flipped = pdf.clone();
        for b in flipped.iter_mut().skip(9).step_by(7) {
            *b ^= 0x5A;
        }
        inputs.push(flipped);
        for (i, bytes) in inputs.iter().enumerate() {
            let err = one(Format::Pdf, bytes).unwrap_err();
            assert!(
                matches!(err, ParseError::CorruptPdf(_) | ParseError::NoTextLayer),
                "input {i}: {err:?}"
            );
        }
        for i in [0, 1, 3] {
            assert_eq!(
                one(Format::Pdf, &inputs[i]).unwrap_err().reason(),
                "corrupt_pdf",
                "input {i}"
            );
        }
    }

    #[test]
    fn reasons_are_stable() {
        assert_eq!(ParseError::NotUtf8.reason(), "invalid_encoding");
        assert_eq!(ParseError::CorruptPdf("x".into()).reason(), "corrupt_pdf");
        assert_eq!(ParseError::EncryptedPdf.reason(), "encrypted_pdf");
        assert_eq!(ParseError::NoTextLayer.reason(), "no_text_layer");
        assert_eq!(
            ParseError::Jsonl {
                line: 1,
                message: String::new()
            }
            .reason(),
            "invalid_jsonl"
        );
        assert_eq!(ParseError::Empty.reason(), "empty");
    }
}
