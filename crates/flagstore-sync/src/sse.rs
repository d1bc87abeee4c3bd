//! Server-sent events, as the WHATWG spec defines the stream: lines ended by LF, CRLF or CR;
//! `event:` and `data:` fields; comment lines (`:` first, LaunchDarkly's heartbeats); a blank
//! line dispatches the event.

use std::collections::VecDeque;

/// Buffers larger than this are given back once mostly empty.
const SHRINK_ABOVE: usize = 1 << 20;
/// What a shrunk buffer keeps: room for a few patches.
const INITIAL: usize = 64 << 10;
/// The most an event's data keeps in one allocation: a put of every flag is one `data:` line
/// of many megabytes, read a block at a time and each block given back once parsed.
const BLOCK: usize = 1 << 20;
/// How much of an event's data [`Data::reader`] reads ahead of its reader at a time.
const READ_AHEAD: usize = 64 << 10;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Event {
    /// `message` when the event named none.
    pub(crate) name: String,
    /// The `data:` lines, joined with `\n`.
    pub(crate) data: Data,
}

/// An event's data: the bytes of its `data:` lines joined with `\n`, in blocks of at most
/// [`BLOCK`] bytes. Read as text (a patch) or through [`Data::reader`] (a put, whose blocks are
/// freed as the parse goes, so that the text and what is parsed from it are never both whole).
#[derive(Debug, Clone, Default, Eq)]
pub(crate) struct Data {
    blocks: VecDeque<Vec<u8>>,
}

impl PartialEq for Data {
    fn eq(&self, other: &Data) -> bool {
        self.blocks
            .iter()
            .flatten()
            .eq(other.blocks.iter().flatten())
    }
}

impl From<&str> for Data {
    fn from(text: &str) -> Data {
        let mut data = Data::default();
        data.push(text.as_bytes());
        data
    }
}

impl Data {
    /// Appends `bytes`.
    pub(crate) fn push(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let Some(block) = self.blocks.back_mut().filter(|b| b.len() < BLOCK) else {
                // After a full block the data is big: whole blocks from then on.
                let capacity = if self.blocks.is_empty() {
                    bytes.len().min(BLOCK)
                } else {
                    BLOCK
                };
                self.blocks.push_back(Vec::with_capacity(capacity));
                continue;
            };
            let n = (BLOCK - block.len()).min(bytes.len());
            if block.capacity() - block.len() < n {
                // Doubling, as a vector grows, but never past a block.
                let wanted = (block.capacity() * 2).max(block.len() + n).min(BLOCK);
                block.reserve_exact(wanted - block.len());
            }
            block.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
        }
    }

    /// The data as text.
    pub(crate) fn into_text(mut self) -> Result<String, NotUtf8> {
        let bytes = match self.blocks.len() {
            0 => Vec::new(),
            1 => self.blocks.pop_front().unwrap_or_default(),
            _ => self.blocks.into_iter().flatten().collect(),
        };
        String::from_utf8(bytes).map_err(|_| NotUtf8)
    }

    /// Reads the data, freeing each block once it has been read. Whoever parses it checks that
    /// it is UTF-8 (JSON parsing does). Buffered as the standard library's readers are, since
    /// serde_json reads a byte at a time and takes a fast path only for those.
    pub(crate) fn reader(self) -> std::io::BufReader<impl std::io::Read> {
        std::io::BufReader::with_capacity(
            READ_AHEAD,
            Blocks {
                blocks: self.blocks,
                at: 0,
            },
        )
    }
}

/// [`Data::reader`].
struct Blocks {
    blocks: VecDeque<Vec<u8>>,
    /// How much of the first block has been read.
    at: usize,
}

impl std::io::Read for Blocks {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let available = std::io::BufRead::fill_buf(self)?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        std::io::BufRead::consume(self, n);
        Ok(n)
    }
}

impl std::io::BufRead for Blocks {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        while self.blocks.front().is_some_and(|b| self.at >= b.len()) {
            self.blocks.pop_front();
            self.at = 0;
        }
        Ok(self.blocks.front().map_or(&[], |b| &b[self.at..]))
    }

    fn consume(&mut self, n: usize) {
        self.at += n;
    }
}

/// What a chunk of the stream held.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    Event(Event),
    /// A comment line: the server is alive.
    Heartbeat,
}

/// Turns the bytes of a stream, in chunks of any size, into events.
#[derive(Debug, Default)]
pub(crate) struct Parser {
    /// Bytes of a line not yet ended (never of a `data:` line once its field name is known:
    /// those go straight to the event's data).
    pending: Vec<u8>,
    /// How much of `pending` is known to hold no line end.
    scanned: usize,
    /// The last line ended with CR: an LF first in the next chunk belongs to it.
    after_cr: bool,
    /// Inside a `data:` line, whose value so far is in the event's data already.
    in_data: Option<DataLine>,
    fields: Fields,
}

/// Where a `data:` line being streamed stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataLine {
    /// Right after `data:`: a space here is the separator, not data.
    AtValue,
    InValue,
}

/// The fields of the event being read.
#[derive(Debug, Default)]
struct Fields {
    name: String,
    data: Data,
    has_data: bool,
}

/// A line that is not UTF-8: the stream is corrupt.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct NotUtf8;

impl Parser {
    /// Feeds the next chunk; what it completed is appended to `out`.
    pub(crate) fn push(&mut self, mut chunk: &[u8], out: &mut Vec<Line>) -> Result<(), NotUtf8> {
        if self.after_cr {
            self.after_cr = false;
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
        }
        if let Some(state) = self.in_data {
            chunk = self.stream_data(state, chunk);
            if self.in_data.is_some() {
                return Ok(());
            }
        }
        self.pending.extend_from_slice(chunk);
        let mut start = 0;
        let mut at = self.scanned;
        while let Some(LineEnd { end, next, cr_last }) = line_end(&self.pending, at) {
            self.after_cr = cr_last;
            let line = std::str::from_utf8(&self.pending[start..end]).map_err(|_| NotUtf8)?;
            if let Some(done) = self.fields.line(line) {
                out.push(done);
            }
            start = next;
            at = next;
        }
        self.pending.drain(..start);
        self.scanned = self.pending.len();
        // An unended `data:` line (a put of every flag is one line of many megabytes): its value
        // so far, and the rest as it comes, go straight to the event's data, never through
        // `pending` and a copy.
        if self.pending.starts_with(b"data:") {
            self.fields.start_data();
            self.in_data = Some(DataLine::AtValue);
            let mut line = std::mem::take(&mut self.pending);
            // It holds no line end, so all of it is the value's so far.
            self.stream_data(DataLine::AtValue, &line[b"data:".len()..]);
            line.clear();
            self.pending = line;
            self.scanned = 0;
        }
        // The stream idles on small patches for hours after a put: keep no buffer sized for a
        // long line.
        if self.pending.capacity() > SHRINK_ABOVE
            && self.pending.len() < self.pending.capacity() / 4
        {
            self.pending.shrink_to(self.pending.len().max(INITIAL));
        }
        Ok(())
    }

    /// Inside a `data:` line: `chunk`'s bytes up to the line's end are the data's. What follows
    /// the line's end (nothing if it has not ended).
    fn stream_data<'c>(&mut self, state: DataLine, mut chunk: &'c [u8]) -> &'c [u8] {
        if chunk.is_empty() {
            return chunk;
        }
        if state == DataLine::AtValue
            && let Some(rest) = chunk.strip_prefix(b" ")
        {
            chunk = rest;
        }
        let Some(LineEnd { end, next, cr_last }) = line_end(chunk, 0) else {
            self.fields.data.push(chunk);
            self.in_data = Some(DataLine::InValue);
            return &[];
        };
        self.fields.data.push(&chunk[..end]);
        self.in_data = None;
        self.after_cr = cr_last;
        &chunk[next..]
    }
}

/// Where a line ends.
struct LineEnd {
    /// The index of its LF, CR or CRLF.
    end: usize,
    /// Where the next line starts.
    next: usize,
    /// It ended with a CR that is the last byte here: an LF first in the next chunk belongs
    /// to it.
    cr_last: bool,
}

/// The first line end in `bytes` from `from`.
fn line_end(bytes: &[u8], from: usize) -> Option<LineEnd> {
    let end = from
        + bytes[from..]
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')?;
    let crlf = bytes[end] == b'\r' && bytes.get(end + 1) == Some(&b'\n');
    Some(LineEnd {
        end,
        next: end + 1 + usize::from(crlf),
        cr_last: bytes[end] == b'\r' && end + 1 == bytes.len(),
    })
}

impl Fields {
    /// A `data:` line begins: data lines are joined with `\n`.
    fn start_data(&mut self) {
        if self.has_data {
            self.data.push(b"\n");
        }
        self.has_data = true;
    }

    fn line(&mut self, line: &str) -> Option<Line> {
        if line.is_empty() {
            if !self.has_data {
                self.name.clear();
                return None;
            }
            let name = match std::mem::take(&mut self.name) {
                name if name.is_empty() => "message".to_owned(),
                name => name,
            };
            self.has_data = false;
            return Some(Line::Event(Event {
                name,
                data: std::mem::take(&mut self.data),
            }));
        }
        if line.starts_with(':') {
            return Some(Line::Heartbeat);
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => value.clone_into(&mut self.name),
            "data" => {
                self.start_data();
                self.data.push(value.as_bytes());
            }
            // `id` and `retry` steer a browser's reconnection; the SDKs' protocol uses neither.
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(chunks: &[&[u8]]) -> Vec<Line> {
        let mut parser = Parser::default();
        let mut out = Vec::new();
        for chunk in chunks {
            parser
                .push(chunk, &mut out)
                .unwrap_or_else(|_| unreachable!());
        }
        out
    }

    fn event(name: &str, data: &str) -> Line {
        Line::Event(Event {
            name: name.to_owned(),
            data: Data::from(data),
        })
    }

    #[test]
    fn events_heartbeats_and_every_line_end() {
        let out =
            parse(&[b"event: put\ndata: {\"a\":\r\ndata:1}\r\n\r:hb\revent:patch\rdata:x\r\r"]);
        assert_eq!(
            out,
            [
                event("put", "{\"a\":\n1}"),
                Line::Heartbeat,
                event("patch", "x")
            ]
        );
    }

    #[test]
    fn any_split_gives_the_same_events() {
        let text: &[u8] =
            b"event: put\r\ndata: {\"flags\":{}}\r\n\r\n: heartbeat\n\ndata: plain\n\n";
        let whole = parse(&[text]);
        assert_eq!(whole.len(), 3);
        for split in 0..text.len() {
            assert_eq!(
                parse(&[&text[..split], &text[split..]]),
                whole,
                "split at {split}"
            );
        }
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(parse(&bytes), whole);
        assert_eq!(whole[2], event("message", "plain"));
    }

    #[test]
    fn an_event_without_data_is_not_dispatched() {
        assert_eq!(
            parse(&[b"event: put\n\nevent: delete\ndata: d\n\n"]),
            [event("delete", "d")]
        );
        // Not yet ended: nothing.
        assert_eq!(parse(&[b"event: put\ndata: d\n"]), []);
    }

    #[test]
    fn a_long_data_line_goes_to_blocks_and_is_read_back_block_by_block() {
        use std::io::{BufRead, Read};
        // Three and a half blocks of one `data:` line, fed in chunks that split everything
        // (the field name, the separator, the line end) somewhere.
        let value: String = (0..BLOCK * 7 / 2)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let text = format!("event: put\r\ndata: {value}\r\ndata: more\r\n\r\n: hb\n");
        for size in [1 << 16, 3, 4099] {
            let mut parser = Parser::default();
            let mut out = Vec::new();
            for chunk in text.as_bytes().chunks(size) {
                parser
                    .push(chunk, &mut out)
                    .unwrap_or_else(|_| unreachable!());
            }
            let [Line::Event(event), Line::Heartbeat] = &mut out[..] else {
                unreachable!("{size}: {:?}", out.len())
            };
            assert_eq!(event.name, "put");
            let data = std::mem::take(&mut event.data);
            // Whole blocks, each as big as a block, never one copy of the line.
            assert_eq!(data.blocks.len(), 4, "{size}");
            assert!(data.blocks.iter().all(|b| b.capacity() <= BLOCK), "{size}");
            let mut blocks = Blocks {
                blocks: data.blocks.clone(),
                at: 0,
            };
            let mut first = vec![0; BLOCK + 1];
            blocks
                .read_exact(&mut first)
                .unwrap_or_else(|_| unreachable!());
            // The first block, read, is given back.
            let left: usize = blocks.fill_buf().map(<[u8]>::len).unwrap_or_default();
            assert_eq!((blocks.blocks.len(), left), (3, BLOCK - 1), "{size}");
            let mut read = String::new();
            data.reader()
                .read_to_string(&mut read)
                .unwrap_or_else(|_| unreachable!());
            assert_eq!(read, format!("{value}\nmore"), "{size}");
        }
    }

    #[test]
    fn small_data_is_text() {
        let [Line::Event(event)] = &mut parse(&[b"data: {\"a\"", b":1}\ndata:\n\n"])[..] else {
            unreachable!()
        };
        let data = std::mem::take(&mut event.data);
        assert_eq!(data.blocks.len(), 1);
        assert_eq!(data.into_text(), Ok("{\"a\":1}\n".to_owned()));
        assert_eq!(Data::from("\u{e9}").into_text(), Ok("\u{e9}".to_owned()));
        let mut split = Data::default();
        split.push(&[0xc3]);
        split.push(&[0xa9]);
        assert_eq!(split.into_text(), Ok("\u{e9}".to_owned()));
        assert_eq!(Data::from("x").into_text().map(|t| t.len()), Ok(1));
        let mut bad = Data::default();
        bad.push(b"\xff");
        assert_eq!(bad.into_text(), Err(NotUtf8));
    }

    #[test]
    fn refuses_bytes_that_are_not_text() {
        let mut parser = Parser::default();
        assert_eq!(parser.push(b"data: \xff\n", &mut Vec::new()), Err(NotUtf8));
    }
}
