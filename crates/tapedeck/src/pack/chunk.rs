//! Whole records in bounded chunks: what `pack` reads its input as.
//!
//! A *record* is one line (its bytes, then its terminator `\n` or `\r\n`, or none at the end
//! of the input), or for CSV one record, whose quoted fields may hold line breaks: lines are
//! joined while a quoted field is open — a `"` opens one only at the start of a field (so an
//! inch mark in `12",3` does not), and `""` inside one is a quote, not its end. A *chunk* is a run of whole records, cut
//! once it holds `lines` records or `bytes` bytes. Memory is bounded by the chunk: a line (or
//! a CSV record) longer than `bytes` is cut into pieces of `bytes` bytes, each a record without
//! a terminator, so one huge line never has to fit in memory at once. Concatenating the
//! records of every chunk gives back the input, byte for byte; the codecs rely on nothing
//! else.

use std::io::{self, BufRead};

/// One record: `bytes[start..content_end]` is its content, `bytes[content_end..end]` its
/// terminator (empty, `\n` or `\r\n`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// First byte of the record in the chunk.
    pub start: usize,
    /// End of the content, start of the terminator.
    pub content_end: usize,
    /// End of the record.
    pub end: usize,
}

/// A run of whole records read from the input.
#[derive(Debug, Default)]
pub struct Chunk {
    /// The records' bytes, as read.
    pub bytes: Vec<u8>,
    /// The records, in order, covering `bytes` exactly.
    pub records: Vec<Span>,
    /// Byte offset of the chunk in the input.
    pub offset: u64,
}

impl Chunk {
    /// The content of record `i` (without its terminator).
    pub fn content(&self, i: usize) -> &[u8] {
        let r = self.records[i];
        &self.bytes[r.start..r.content_end]
    }

    /// Record `i`, terminator included.
    pub fn record(&self, i: usize) -> &[u8] {
        let r = self.records[i];
        &self.bytes[r.start..r.end]
    }

    /// The terminator of record `i`.
    pub fn terminator(&self, i: usize) -> &[u8] {
        let r = self.records[i];
        &self.bytes[r.content_end..r.end]
    }
}

/// Reads an input as chunks of whole records.
#[derive(Debug)]
pub struct Chunker<R> {
    input: R,
    /// Join lines while a quoted field is open (CSV, with this delimiter).
    csv: Option<u8>,
    lines: usize,
    bytes: usize,
    offset: u64,
}

impl<R: BufRead> Chunker<R> {
    /// A chunker cutting after `lines` records or `bytes` bytes (both at least 1); `csv`: the
    /// delimiter of a CSV input, whose records may span lines.
    pub fn new(input: R, csv: Option<u8>, lines: usize, bytes: usize) -> Chunker<R> {
        Chunker {
            input,
            csv,
            lines: lines.max(1),
            bytes: bytes.max(1),
            offset: 0,
        }
    }

    /// Bytes read so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next chunk, or `None` at the end of the input.
    pub fn next_chunk(&mut self) -> io::Result<Option<Chunk>> {
        let mut chunk = Chunk {
            offset: self.offset,
            ..Chunk::default()
        };
        while chunk.records.len() < self.lines && chunk.bytes.len() < self.bytes {
            let start = chunk.bytes.len();
            let mut quotes = Quotes::default();
            loop {
                let line_start = chunk.bytes.len();
                // One record is at most `bytes` long, so a chunk is under twice the bound.
                let room = self.bytes;
                let ended = read_line(
                    &mut self.input,
                    &mut chunk.bytes,
                    start.saturating_add(room),
                )?;
                let open = match self.csv {
                    Some(d) => quotes.scan(&chunk.bytes[line_start..], d),
                    None => false,
                };
                // A record goes on while a quoted field is open, the line ended with a newline
                // and it is still within the bound.
                if !(open && ended == Ended::Newline && chunk.bytes.len() - start < room) {
                    break;
                }
            }
            let end = chunk.bytes.len();
            if end == start {
                break;
            }
            let content_end = if chunk.bytes[start..end].ends_with(b"\r\n") {
                end - 2
            } else if chunk.bytes[start..end].ends_with(b"\n") {
                end - 1
            } else {
                end
            };
            chunk.records.push(Span {
                start,
                content_end,
                end,
            });
        }
        self.offset += chunk.bytes.len() as u64;
        Ok(if chunk.records.is_empty() {
            None
        } else {
            Some(chunk)
        })
    }
}

/// Where a CSV record's quoting stands after the bytes scanned so far.
#[derive(Debug)]
struct Quotes {
    /// The next byte starts a field.
    field_start: bool,
    /// Inside a quoted field.
    open: bool,
    /// Inside a quoted field, just after a `"`: the end of the field, or the first half of `""`.
    pending: bool,
}

impl Default for Quotes {
    fn default() -> Self {
        Quotes {
            field_start: true,
            open: false,
            pending: false,
        }
    }
}

impl Quotes {
    /// Scans `bytes`; returns whether a quoted field is open after them.
    fn scan(&mut self, bytes: &[u8], delimiter: u8) -> bool {
        // Most lines hold no quote at all.
        if !self.open && memchr::memchr(b'"', bytes).is_none() {
            self.field_start = bytes.last().is_none_or(|&b| b == delimiter || b == b'\n');
            return false;
        }
        for &b in bytes {
            if self.open {
                if self.pending {
                    self.pending = false;
                    if b == b'"' {
                        continue;
                    }
                    self.open = false;
                } else {
                    self.pending = b == b'"';
                    continue;
                }
            }
            if b == b'"' && self.field_start {
                self.open = true;
                self.field_start = false;
            } else {
                self.field_start = b == delimiter || b == b'\n';
            }
        }
        self.open
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Ended {
    Newline,
    Limit,
    Eof,
}

/// Appends bytes up to and including the next `\n`, stopping early when `out` reaches `limit`
/// bytes or the input ends.
fn read_line<R: BufRead>(input: &mut R, out: &mut Vec<u8>, limit: usize) -> io::Result<Ended> {
    loop {
        if out.len() >= limit {
            return Ok(Ended::Limit);
        }
        let buf = match input.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(Ended::Eof);
        }
        let room = limit - out.len();
        let window = &buf[..buf.len().min(room)];
        match memchr::memchr(b'\n', window) {
            Some(i) => {
                out.extend_from_slice(&window[..=i]);
                input.consume(i + 1);
                return Ok(Ended::Newline);
            }
            None => {
                let n = window.len();
                out.extend_from_slice(window);
                input.consume(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(input: &[u8], csv: bool, lines: usize, bytes: usize) -> Vec<Vec<Vec<u8>>> {
        let mut c = Chunker::new(input, csv.then_some(b','), lines, bytes);
        let mut out = Vec::new();
        while let Some(chunk) = c.next_chunk().unwrap() {
            out.push(
                (0..chunk.records.len())
                    .map(|i| chunk.record(i).to_vec())
                    .collect(),
            );
        }
        out
    }

    #[test]
    fn chunks_hold_whole_lines_and_give_back_the_input() {
        let input = b"a\nbb\r\nccc\nlast";
        let got = records(input, false, 2, 1 << 20);
        assert_eq!(
            got,
            vec![
                vec![b"a\n".to_vec(), b"bb\r\n".to_vec()],
                vec![b"ccc\n".to_vec(), b"last".to_vec()]
            ]
        );
        assert_eq!(got.concat().concat(), input);
    }

    #[test]
    fn a_quoted_newline_keeps_a_csv_record_whole() {
        let input = b"a,\"x\ny\"\nb,c\n";
        let got = records(input, true, 10, 1 << 20);
        assert_eq!(got, vec![vec![b"a,\"x\ny\"\n".to_vec(), b"b,c\n".to_vec()]]);
        // Without the CSV rule, lines are records.
        assert_eq!(records(input, false, 10, 1 << 20)[0].len(), 3);
    }

    #[test]
    fn only_a_quote_that_opens_a_field_joins_lines() {
        // An inch mark inside an unquoted field opens nothing; a doubled quote inside a quoted
        // field does not close it.
        let input = b"pipe,12\",3\nnext,1,2\n\"a\"\"\nb\",2\nlast,\"x\"\n";
        let got = records(input, true, 10, 1 << 20);
        assert_eq!(
            got,
            vec![vec![
                b"pipe,12\",3\n".to_vec(),
                b"next,1,2\n".to_vec(),
                b"\"a\"\"\nb\",2\n".to_vec(),
                b"last,\"x\"\n".to_vec()
            ]]
        );
    }

    #[test]
    fn a_line_longer_than_the_bound_is_cut_into_pieces() {
        let input = vec![b'x'; 25];
        let got = records(&input, false, 100, 10);
        assert_eq!(got.len(), 3);
        assert_eq!(got.concat().concat(), input);
        assert!(got.iter().all(|c| c.concat().len() <= 10));
    }

    #[test]
    fn an_unclosed_quote_does_not_swallow_the_input() {
        let mut input = b"\"open\n".to_vec();
        input.extend(std::iter::repeat_n(b"line\n".as_slice(), 10).flatten());
        let got = records(&input, true, 100, 16);
        assert_eq!(got.concat().concat(), input);
        assert!(got.iter().all(|c| c.concat().len() < 2 * 16));
    }
}
