//! The connection cursor: one position per channel, carried in SSE `id:` lines.
//!
//! Format: `channel=position` pairs joined by `,`, a position being `ms-seq@epoch` (or `ms-seq`
//! alone, as tidings wrote before epochs), e.g. `room:1=1700000000000-0@5f3a09c1,room:2=0-0`.
//! Channel names cannot contain `,` or `=`, so the format needs no escaping, and every character
//! is printable ASCII, so it travels unchanged in an `id:` line, a `Last-Event-ID` header, and a
//! query parameter.

use std::fmt;

use crate::channel::{Channel, ChannelError};
use crate::id::{ParsePositionError, Position};

/// The longest cursor accepted, in bytes. Large enough for every cursor the server can write at
/// the default limit of 100 channels: a 128-byte name, `=`, an id of two 20-digit numbers and
/// `@` with an 8-digit epoch is at most 180 bytes per channel.
pub const MAX_CURSOR_LEN: usize = 32 * 1024;

/// Positions in several channels: the last entry seen in each.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    positions: Vec<(Channel, Position)>,
}

/// A cursor string that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CursorError {
    /// Longer than [`MAX_CURSOR_LEN`].
    #[error("cursor is {0} bytes long; at most {MAX_CURSOR_LEN} are allowed")]
    TooLong(usize),
    /// A part without `=`.
    #[error("cursor part {0:?} is not channel=id; a cursor is channel=ms-seq@epoch pairs joined by commas, as sent in the id: of an event")]
    Malformed(String),
    /// A bad channel name inside the cursor.
    #[error("cursor names an invalid channel: {0}")]
    Channel(#[from] ChannelError),
    /// A bad id inside the cursor.
    #[error("cursor holds an {0}")]
    Id(#[from] ParsePositionError),
    /// The same channel twice.
    #[error("cursor names channel {0:?} twice")]
    Duplicate(String),
}

impl Cursor {
    /// Parses a cursor as sent in an `id:` line.
    ///
    /// # Errors
    /// [`CursorError`] naming the first part that is wrong.
    pub fn parse(s: &str) -> Result<Cursor, CursorError> {
        if s.len() > MAX_CURSOR_LEN {
            return Err(CursorError::TooLong(s.len()));
        }
        let mut cursor = Cursor::default();
        if s.is_empty() {
            return Ok(cursor);
        }
        let mut seen = std::collections::HashSet::new();
        for part in s.split(',') {
            let (name, id) = part
                .split_once('=')
                .ok_or_else(|| CursorError::Malformed(part.chars().take(64).collect()))?;
            let channel = Channel::with_max_len(name, crate::channel::MAX_CHANNEL_LEN)?;
            let id: Position = id.parse()?;
            if !seen.insert(channel.clone()) {
                return Err(CursorError::Duplicate(channel.to_string()));
            }
            cursor.positions.push((channel, id));
        }
        Ok(cursor)
    }

    /// The position stored for `channel`, if any.
    pub fn get(&self, channel: &Channel) -> Option<Position> {
        self.positions
            .iter()
            .find(|(c, _)| c == channel)
            .map(|(_, id)| *id)
    }

    /// Sets the position for `channel`, adding it when absent.
    pub fn set(&mut self, channel: &Channel, id: Position) {
        match self.positions.iter_mut().find(|(c, _)| c == channel) {
            Some((_, pos)) => *pos = id,
            None => self.positions.push((channel.clone(), id)),
        }
    }

    /// Removes `channel`'s position, if any.
    pub fn remove(&mut self, channel: &Channel) {
        self.positions.retain(|(c, _)| c != channel);
    }

    /// The positions, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&Channel, Position)> {
        self.positions.iter().map(|(c, id)| (c, *id))
    }

    /// Number of channels in the cursor.
    pub fn len(&self) -> usize {
        self.positions.len()
    }

    /// True when the cursor holds no channel.
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (channel, id)) in self.positions.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{channel}={id}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::StreamId;

    #[test]
    fn round_trips() {
        let text = "room:1=1700000000000-0@5f3a09c1,room:2=0-0,room:3=7-1";
        let cursor = Cursor::parse(text).unwrap();
        assert_eq!(cursor.len(), 3);
        assert_eq!(cursor.to_string(), text);
        assert_eq!(cursor.get(&Channel::new("room:2").unwrap()), Some(Position::ZERO));
    }

    #[test]
    fn the_longest_cursor_the_server_writes_reads_back() {
        let mut cursor = Cursor::default();
        for i in 0..100 {
            let name = format!("{i:0>width$}", width = crate::channel::MAX_CHANNEL_LEN);
            let channel = Channel::with_max_len(&name, usize::MAX).unwrap();
            let epoch = Some("ffffffff".parse().unwrap());
            cursor.set(&channel, Position::new(StreamId::new(u64::MAX, u64::MAX), epoch));
        }
        let text = cursor.to_string();
        assert!(
            text.len() > 16 * 1024,
            "the case that used to fail: {} bytes",
            text.len()
        );
        assert_eq!(Cursor::parse(&text).unwrap(), cursor);
    }

    #[test]
    fn empty_is_empty() {
        assert!(Cursor::parse("").unwrap().is_empty());
    }

    #[test]
    fn rejects_bad_parts() {
        assert!(matches!(Cursor::parse("room"), Err(CursorError::Malformed(_))));
        assert!(matches!(Cursor::parse("a=1-0,"), Err(CursorError::Malformed(_))));
        assert!(matches!(Cursor::parse("a b=1-0"), Err(CursorError::Channel(_))));
        assert!(matches!(Cursor::parse("a=x"), Err(CursorError::Id(_))));
        assert!(matches!(Cursor::parse("a=1-0@xyz"), Err(CursorError::Id(_))));
        assert!(matches!(
            Cursor::parse("a=1-0,a=2-0"),
            Err(CursorError::Duplicate(_))
        ));
        assert!(matches!(
            Cursor::parse(&"a".repeat(MAX_CURSOR_LEN + 1)),
            Err(CursorError::TooLong(_))
        ));
        assert!(Cursor::parse("a=1-0\nevent: x").is_err());
    }
}
