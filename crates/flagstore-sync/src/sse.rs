//! Server-sent events, as the WHATWG spec defines the stream: lines ended by LF, CRLF or CR;
//! `event:` and `data:` fields; comment lines (`:` first, LaunchDarkly's heartbeats); a blank
//! line dispatches the event.

/// Buffers larger than this are given back once mostly empty.
const SHRINK_ABOVE: usize = 1 << 20;
/// What a shrunk buffer keeps: room for a few patches.
const INITIAL: usize = 64 << 10;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Event {
    /// `message` when the event named none.
    pub(crate) name: String,
    /// The `data:` lines, joined with `\n`.
    pub(crate) data: String,
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
    /// Bytes of a line not yet ended.
    pending: Vec<u8>,
    /// How much of `pending` is known to hold no line end.
    scanned: usize,
    /// The last line ended with CR: an LF first in the next chunk belongs to it.
    after_cr: bool,
    fields: Fields,
}

/// The fields of the event being read.
#[derive(Debug, Default)]
struct Fields {
    name: String,
    data: String,
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
        self.pending.extend_from_slice(chunk);
        let mut start = 0;
        let mut at = self.scanned;
        while let Some(offset) = self.pending[at..]
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
        {
            let end = at + offset;
            let mut next = end + 1;
            if self.pending[end] == b'\r' {
                match self.pending.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            let line = std::str::from_utf8(&self.pending[start..end]).map_err(|_| NotUtf8)?;
            if let Some(done) = self.fields.line(line) {
                out.push(done);
            }
            start = next;
            at = next;
        }
        self.pending.drain(..start);
        self.scanned = self.pending.len();
        // A put of every flag is one line of many megabytes; the stream then idles on small
        // patches for hours. Keep no buffer sized for the put.
        if self.pending.capacity() > SHRINK_ABOVE
            && self.pending.len() < self.pending.capacity() / 4
        {
            self.pending.shrink_to(self.pending.len().max(INITIAL));
        }
        Ok(())
    }
}

impl Fields {
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
                if self.has_data {
                    self.data.push('\n');
                } else {
                    // Usually the event's only data line: sized exactly, not to the next power
                    // of two (a put of every flag is megabytes).
                    self.data.reserve_exact(value.len());
                }
                self.data.push_str(value);
                self.has_data = true;
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
            data: data.to_owned(),
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
    fn refuses_bytes_that_are_not_text() {
        let mut parser = Parser::default();
        assert_eq!(parser.push(b"data: \xff\n", &mut Vec::new()), Err(NotUtf8));
    }
}
