//! Channel names: what is allowed, checked once at the edge.

use std::fmt;
use std::sync::Arc;

/// The longest channel name [`Channel::new`] accepts, and the default of
/// [`Limits::max_channel_len`](crate::Limits).
pub const DEFAULT_MAX_CHANNEL_LEN: usize = 128;

/// The longest channel name any configuration may allow: with the most channels a connection may
/// watch, a cursor naming every one of them still fits in
/// [`MAX_CURSOR_LEN`](crate::MAX_CURSOR_LEN).
pub const MAX_CHANNEL_LEN: usize = 256;

/// A checked channel name: 1 to 128 characters (or up to a configured
/// [`Limits::max_channel_len`](crate::Limits), at most 256) from `A-Z a-z 0-9 _ - : .`.
///
/// The allowed set keeps names safe everywhere they travel: in Redis keys (no braces, which would
/// change cluster hash-slot placement), in SSE `id:` lines and cursors (no `,` `=` or control
/// characters), and in URLs.
///
/// ```
/// use tidings::Channel;
/// assert!(Channel::new("room:1").is_ok());
/// assert!(Channel::new("room 1").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Channel(Arc<str>);

/// What [`Channel::presence`] appends: `#` is outside the allowed set, so no client channel
/// ends so.
const PRESENCE_SUFFIX: &str = "#presence";

/// A channel name that is not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// The name is empty.
    #[error("channel name is empty; use 1 or more characters from A-Z a-z 0-9 _ - : .")]
    Empty,
    /// The name is longer than the limit.
    #[error("channel name is {len} characters long; at most {max} are allowed")]
    TooLong {
        /// The name's length in bytes.
        len: usize,
        /// The limit it broke.
        max: usize,
    },
    /// The name contains a character outside the allowed set.
    #[error("channel name {name:?} contains {ch:?} at position {position}; allowed are A-Z a-z 0-9 _ - : .")]
    BadChar {
        /// The name (cut to 64 characters).
        name: String,
        /// The first character not allowed.
        ch: char,
        /// Its position (in characters).
        position: usize,
    },
}

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':' | '.')
}

impl Channel {
    /// Checks a channel name, with the default length limit ([`DEFAULT_MAX_CHANNEL_LEN`]).
    ///
    /// # Errors
    /// [`ChannelError`] when the name is empty, too long, or has a character outside the set.
    pub fn new(name: &str) -> Result<Channel, ChannelError> {
        Channel::with_max_len(name, DEFAULT_MAX_CHANNEL_LEN)
    }

    /// Checks a channel name against a length limit of `max` characters (capped to
    /// [`MAX_CHANNEL_LEN`]).
    ///
    /// # Errors
    /// [`ChannelError`] when the name is empty, too long, or has a character outside the set.
    pub fn with_max_len(name: &str, max: usize) -> Result<Channel, ChannelError> {
        let max = max.min(MAX_CHANNEL_LEN);
        if name.is_empty() {
            return Err(ChannelError::Empty);
        }
        if let Some((position, ch)) = name.chars().enumerate().find(|(_, c)| !allowed(*c)) {
            return Err(ChannelError::BadChar {
                name: name.chars().take(64).collect(),
                ch,
                position,
            });
        }
        if name.len() > max {
            return Err(ChannelError::TooLong { len: name.len(), max });
        }
        Ok(Channel(Arc::from(name)))
    }

    /// The channel's presence stream: where joins and leaves of its members are written, beside
    /// its events. Its name (`<name>#presence`) is not a channel name a client can use.
    pub fn presence(&self) -> Channel {
        Channel(Arc::from(format!("{}{PRESENCE_SUFFIX}", self.0)))
    }

    /// For a presence stream ([`Channel::presence`]), the channel it belongs to.
    pub fn presence_of(&self) -> Option<Channel> {
        self.0
            .strip_suffix(PRESENCE_SUFFIX)
            .map(|name| Channel(Arc::from(name)))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl AsRef<str> for Channel {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl serde::Serialize for Channel {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_set() {
        for ok in ["a", "room:1", "user.42_x-y", &"x".repeat(DEFAULT_MAX_CHANNEL_LEN)] {
            assert!(Channel::new(ok).is_ok(), "{ok:?} rejected");
        }
    }

    #[test]
    fn rejects_everything_else() {
        assert_eq!(Channel::new(""), Err(ChannelError::Empty));
        assert!(matches!(
            Channel::new(&"x".repeat(129)),
            Err(ChannelError::TooLong { len: 129, max: 128 })
        ));
        assert!(Channel::with_max_len(&"x".repeat(129), 200).is_ok());
        assert!(matches!(
            Channel::with_max_len("abcd", 3),
            Err(ChannelError::TooLong { len: 4, max: 3 })
        ));
        // No configuration goes past the ceiling.
        assert!(matches!(
            Channel::with_max_len(&"x".repeat(MAX_CHANNEL_LEN + 1), usize::MAX),
            Err(ChannelError::TooLong {
                max: MAX_CHANNEL_LEN,
                ..
            })
        ));
        for bad in ["a b", "a\nb", "a{b}", "a,b", "a=b", "é", "a\0", "a/b", "a%20"] {
            let err = Channel::new(bad).unwrap_err();
            assert!(matches!(err, ChannelError::BadChar { .. }), "{bad:?}: {err}");
            assert!(err.to_string().contains("allowed are"), "{err}");
        }
    }
}
