//! Stream entry ids: `<milliseconds>-<sequence>`, the format Redis Streams use.

use std::fmt;
use std::str::FromStr;

/// The id of one entry in a channel's stream, ordered by time then sequence.
///
/// Both stores hand out ids in Redis's `ms-seq` format, so a cursor taken on the embedded store
/// reads the same way as one taken on Redis.
///
/// ```
/// use tidings::StreamId;
/// let id: StreamId = "1700000000000-3".parse().unwrap();
/// assert_eq!(id.to_string(), "1700000000000-3");
/// assert!(id > StreamId::ZERO);
/// ```
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId {
    /// Milliseconds since the Unix epoch when the entry was added.
    pub ms: u64,
    /// Sequence number among entries added in the same millisecond.
    pub seq: u64,
}

impl StreamId {
    /// The id before every entry: a cursor at `0-0` means "from the beginning".
    pub const ZERO: StreamId = StreamId { ms: 0, seq: 0 };

    /// Builds an id from its two parts.
    pub const fn new(ms: u64, seq: u64) -> Self {
        StreamId { ms, seq }
    }

    /// The smallest id greater than this one.
    pub fn successor(self) -> StreamId {
        match self.seq.checked_add(1) {
            Some(seq) => StreamId { ms: self.ms, seq },
            None => StreamId {
                ms: self.ms.saturating_add(1),
                seq: 0,
            },
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// A string that is not a stream id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid stream id {0:?}: expected <milliseconds>-<sequence>, two unsigned integers such as 1700000000000-0")]
pub struct ParseIdError(pub String);

impl FromStr for StreamId {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseIdError(s.chars().take(64).collect());
        let (ms, seq) = s.split_once('-').ok_or_else(err)?;
        let digits = |p: &str| !p.is_empty() && p.len() <= 20 && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return Err(err());
        }
        Ok(StreamId {
            ms: ms.parse().map_err(|_| err())?,
            seq: seq.parse().map_err(|_| err())?,
        })
    }
}

impl serde::Serialize for StreamId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for StreamId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The identity of one channel's history: it changes whenever that history is lost (the store
/// restarted without persistence, the stream's key was deleted, evicted or expired), the way
/// Centrifugo pairs an offset with an epoch. A position in one epoch says nothing about another,
/// so a cursor that carries an epoch the channel no longer has resumes with `tidings.reset`.
///
/// Written as eight lowercase hex digits, after an id: `1700000000000-0@5f3a09c1`.
///
/// ```
/// use tidings::Epoch;
/// let e: Epoch = "5f3a09c1".parse().unwrap();
/// assert_eq!(e.to_string(), "5f3a09c1");
/// assert!("5F3A09C1".parse::<Epoch>().is_err());
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Epoch(u32);

impl Epoch {
    /// A new random epoch, for a stream being created.
    pub fn random() -> Epoch {
        use rand::Rng;
        Epoch(rand::rng().random())
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

/// Not eight lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid epoch {0:?}: expected eight lowercase hex digits such as 5f3a09c1")]
pub struct ParseEpochError(pub String);

impl FromStr for Epoch {
    type Err = ParseEpochError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = s.len() == 8 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !ok {
            return Err(ParseEpochError(s.chars().take(64).collect()));
        }
        u32::from_str_radix(s, 16)
            .map(Epoch)
            .map_err(|_| ParseEpochError(s.to_string()))
    }
}

/// A place in a channel's history: an id, and the epoch it belongs to when known.
///
/// Written `ms-seq` or `ms-seq@epoch`. A position without an epoch (written by tidings before
/// epochs, or built by hand from an id) is checked by id only.
///
/// ```
/// use tidings::{Position, StreamId};
/// let p: Position = "12-3@0000abcd".parse().unwrap();
/// assert_eq!(p.id, StreamId::new(12, 3));
/// assert_eq!(p.to_string(), "12-3@0000abcd");
/// assert_eq!("12-3".parse::<Position>().unwrap().epoch, None);
/// ```
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Position {
    /// The last id seen (`0-0`: none).
    pub id: StreamId,
    /// The epoch of the history `id` belongs to.
    pub epoch: Option<Epoch>,
}

impl Position {
    /// The start of a channel that has never been seen.
    pub const ZERO: Position = Position {
        id: StreamId::ZERO,
        epoch: None,
    };

    /// A position at `id` in `epoch`.
    pub const fn new(id: StreamId, epoch: Option<Epoch>) -> Position {
        Position { id, epoch }
    }

    /// A position as cursors write it: at `0-0` without the epoch, where none is needed
    /// (nothing was seen).
    pub(crate) fn written(id: StreamId, epoch: Option<Epoch>) -> Position {
        Position::new(id, epoch.filter(|_| id > StreamId::ZERO))
    }
}

impl From<StreamId> for Position {
    fn from(id: StreamId) -> Self {
        Position { id, epoch: None }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.epoch {
            Some(e) => write!(f, "{}@{e}", self.id),
            None => write!(f, "{}", self.id),
        }
    }
}

/// A position that is not `ms-seq` or `ms-seq@epoch`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParsePositionError {
    /// The id part.
    #[error(transparent)]
    Id(#[from] ParseIdError),
    /// The epoch part.
    #[error(transparent)]
    Epoch(#[from] ParseEpochError),
}

impl FromStr for Position {
    type Err = ParsePositionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (id, epoch) = match s.split_once('@') {
            Some((id, epoch)) => (id, Some(epoch.parse()?)),
            None => (s, None),
        };
        Ok(Position {
            id: id.parse()?,
            epoch,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let id: StreamId = "12-3".parse().unwrap();
        assert_eq!(id, StreamId::new(12, 3));
        assert_eq!(id.to_string(), "12-3");
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "1",
            "-1",
            "1-",
            "a-1",
            "1-b",
            "1-2-3",
            "+1-2",
            " 1-2",
            "1-2\n",
            "99999999999999999999999-0",
        ] {
            assert!(bad.parse::<StreamId>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn orders_by_time_then_sequence() {
        assert!(StreamId::new(1, 9) < StreamId::new(2, 0));
        assert!(StreamId::new(2, 0) < StreamId::new(2, 1));
        assert_eq!(StreamId::new(5, u64::MAX).successor(), StreamId::new(6, 0));
    }
    #[test]
    fn positions_parse_with_and_without_epoch() {
        let p: Position = "5-1@00000001".parse().unwrap();
        assert_eq!(p, Position::new(StreamId::new(5, 1), Some(Epoch(1))));
        assert_eq!(
            "5-1".parse::<Position>().unwrap(),
            Position::from(StreamId::new(5, 1))
        );
        for bad in [
            "5-1@",
            "5-1@1",
            "5-1@0000000g",
            "5-1@000000001",
            "@00000001",
            "5-1@00000001@00000001",
        ] {
            assert!(bad.parse::<Position>().is_err(), "{bad:?} parsed");
        }
    }
}
