//! The frame model: what the server tells a client, whatever the transport.
//!
//! A session (replay, then live) decides *what* to say as [`Frame`]s; a transport decides how it
//! looks on the wire. Server-Sent Events is one encoder ([`Frame::write_sse`]: the frame's name
//! as `event:`, its cursor as `id:`, its fields as `data:`); WebSocket is another
//! ([`Frame::write_ws`]: one JSON text message `{"type": …, …fields}`). Frames borrow what they
//! carry, so encoding an event allocates nothing beyond the output buffer.
//!
//! Every value written is one line: channel and event names come from checked character sets,
//! payloads are one line of JSON, cursors are printable ASCII, and reasons are our own text.

use std::fmt::Write as _;
use std::time::Duration;

use crate::channel::Channel;
use crate::cursor::Cursor;
use crate::envelope::write_envelope_fields;
use crate::id::StreamId;
use crate::store::{Entry, Lost};

/// A client's `ref` for a request, echoed in the answer: a JSON string or number, as sent.
pub(crate) type Ref<'a> = Option<&'a serde_json::value::RawValue>;

/// One thing the server tells a client.
pub(crate) enum Frame<'a> {
    /// The reconnect delay a client should use (SSE `retry:`), sent once, first.
    Retry(Duration),
    /// A stored event; `cursor` is the connection's cursor with it.
    Event {
        cursor: &'a Cursor,
        channel: &'a Channel,
        entry: &'a Entry,
    },
    /// Replay is done and the connection is live from `cursor`.
    Ready {
        cursor: &'a Cursor,
        channels: &'a [Channel],
        heartbeat: Duration,
        /// The WebSocket `subscribe` this answers.
        reference: Ref<'a>,
    },
    /// History of `channel` after the client's cursor is gone.
    Reset {
        cursor: &'a Cursor,
        channel: &'a Channel,
        oldest: Option<StreamId>,
        reason: Lost,
    },
    /// The connection ends because the client fell behind (or the server is going away);
    /// resume from `cursor`.
    Lagged { cursor: &'a Cursor, reason: &'a str },
    /// The credential expired; the connection ends; resume from `cursor` with a new one.
    Expired { cursor: &'a Cursor },
    /// A heartbeat after a quiet interval.
    Ping,
    /// WebSocket: the connection is open for `sub` (`None`: anonymous).
    Welcome {
        connection: &'a str,
        sub: Option<&'a str>,
        heartbeat: Duration,
        max_channels: usize,
        max_message_bytes: usize,
        messages_per_second: u32,
    },
    /// WebSocket: a `subscribe` was accepted; its replay follows, then `Ready`.
    Subscribed {
        reference: Ref<'a>,
        channels: &'a [Channel],
    },
    /// WebSocket: these channels are no longer watched; `cursor` no longer names them.
    Unsubscribed {
        reference: Ref<'a>,
        channels: &'a [Channel],
        cursor: &'a Cursor,
    },
    /// WebSocket: an `emit` was stored as `id` (or was a duplicate of `id`).
    Emitted {
        reference: Ref<'a>,
        id: StreamId,
        duplicate: bool,
    },
    /// WebSocket: a request was refused; `body` is the JSON error body HTTP would answer with
    /// (`{"error", "message", …}`), `status` its HTTP status.
    Error {
        reference: Ref<'a>,
        status: u16,
        body: &'a serde_json::Map<String, serde_json::Value>,
    },
    /// WebSocket: the answer to a `ping`.
    Pong { reference: Ref<'a> },
    /// Who is on `channel`, sent once when the connection is live on it.
    PresenceSnapshot {
        snapshot: &'a crate::presence::PresenceSnapshot,
    },
    /// A member arrived on `channel` (`member`: its JSON, as the store keeps it).
    ///
    /// `member` is the member as one line of JSON (an object), `None` for an entry that holds
    /// none: the session checks it once per delivery, not once per subscriber.
    PresenceJoin {
        channel: &'a Channel,
        member: Option<&'a str>,
    },
    /// A member's last connection left `channel`.
    PresenceLeave {
        channel: &'a Channel,
        member: Option<&'a str>,
    },
    /// WebSocket: a `presence.join` (or a subscribe with `presence`) took effect.
    PresenceJoined {
        reference: Ref<'a>,
        channels: &'a [Channel],
    },
    /// WebSocket: a `presence.leave` took effect.
    PresenceLeft {
        reference: Ref<'a>,
        channels: &'a [Channel],
    },
}

impl Frame<'_> {
    /// The event name a client sees (`tidings.*` for control frames); `None` for `Retry`.
    pub fn event_name(&self) -> Option<&str> {
        Some(match self {
            Frame::Retry(_) => return None,
            Frame::Event { entry, .. } => &entry.event,
            Frame::Ready { .. } => "tidings.ready",
            Frame::Reset { .. } => "tidings.reset",
            Frame::Lagged { .. } => "tidings.lagged",
            Frame::Expired { .. } => "tidings.expired",
            Frame::Ping => "tidings.ping",
            Frame::Welcome { .. } => "tidings.welcome",
            Frame::Subscribed { .. } => "tidings.subscribed",
            Frame::Unsubscribed { .. } => "tidings.unsubscribed",
            Frame::Emitted { .. } => "tidings.emitted",
            Frame::Error { .. } => "tidings.error",
            Frame::Pong { .. } => "tidings.pong",
            Frame::PresenceSnapshot { .. } => "tidings.presence.snapshot",
            Frame::PresenceJoin { .. } => "tidings.presence.join",
            Frame::PresenceLeave { .. } => "tidings.presence.leave",
            Frame::PresenceJoined { .. } => "tidings.presence.joined",
            Frame::PresenceLeft { .. } => "tidings.presence.left",
        })
    }

    /// The `type` of the frame as a WebSocket message: its event name without `tidings.`, and
    /// `event` for stored events.
    pub fn ws_type(&self) -> &str {
        match self {
            Frame::Event { .. } => "event",
            other => other
                .event_name()
                .and_then(|n| n.strip_prefix("tidings."))
                .unwrap_or(""),
        }
    }

    /// The client's `ref` the frame answers.
    fn reference(&self) -> Ref<'_> {
        match self {
            Frame::Ready { reference, .. }
            | Frame::Subscribed { reference, .. }
            | Frame::Unsubscribed { reference, .. }
            | Frame::Emitted { reference, .. }
            | Frame::Error { reference, .. }
            | Frame::PresenceJoined { reference, .. }
            | Frame::PresenceLeft { reference, .. }
            | Frame::Pong { reference } => *reference,
            _ => None,
        }
    }

    /// The cursor the frame carries, if any (the SSE `id:`).
    pub fn cursor(&self) -> Option<&Cursor> {
        match self {
            Frame::Event { cursor, .. }
            | Frame::Ready { cursor, .. }
            | Frame::Reset { cursor, .. }
            | Frame::Lagged { cursor, .. }
            | Frame::Expired { cursor }
            | Frame::Unsubscribed { cursor, .. } => Some(cursor),
            _ => None,
        }
    }

    /// The frame's JSON payload (the SSE `data:`), on one line.
    pub fn write_data(&self, out: &mut String) {
        out.push('{');
        self.write_fields(out);
        out.push('}');
    }

    /// The frame's fields as JSON object members (`"a":1,"b":2`, or nothing), on one line.
    fn write_fields(&self, out: &mut String) {
        match self {
            Frame::Retry(_) | Frame::Ping | Frame::Pong { .. } => {}
            Frame::Event { channel, entry, .. } => write_envelope_fields(out, channel, entry),
            Frame::Ready {
                cursor,
                channels,
                heartbeat,
                ..
            } => {
                out.push_str(r#""cursor":"#);
                json_str(out, &cursor.to_string());
                out.push_str(r#","channels":"#);
                channel_list(out, channels);
                let _ = write!(out, r#","heartbeat_ms":{}"#, heartbeat.as_millis());
            }
            Frame::Reset {
                cursor,
                channel,
                oldest,
                reason,
            } => {
                out.push_str(r#""channel":"#);
                json_str(out, channel.as_str());
                out.push_str(r#","oldest":"#);
                match oldest {
                    Some(id) => json_str(out, &id.to_string()),
                    None => out.push_str("null"),
                }
                out.push_str(r#","cursor":"#);
                json_str(out, &cursor.to_string());
                let _ = write!(out, r#","reason":"{}""#, reason.as_str());
            }
            Frame::Lagged { cursor, reason } => {
                out.push_str(r#""reason":"#);
                json_str(out, reason);
                out.push_str(r#","cursor":"#);
                json_str(out, &cursor.to_string());
            }
            Frame::Expired { cursor } => {
                out.push_str(r#""reason":"token expired","cursor":"#);
                json_str(out, &cursor.to_string());
            }
            Frame::Welcome {
                connection,
                sub,
                heartbeat,
                max_channels,
                max_message_bytes,
                messages_per_second,
            } => {
                out.push_str(r#""connection":"#);
                json_str(out, connection);
                out.push_str(r#","sub":"#);
                match sub {
                    Some(sub) => json_str(out, sub),
                    None => out.push_str("null"),
                }
                let _ = write!(
                    out,
                    r#","heartbeat_ms":{},"limits":{{"max_channels":{max_channels},"max_message_bytes":{max_message_bytes},"messages_per_second":{messages_per_second}}}"#,
                    heartbeat.as_millis()
                );
            }
            Frame::Subscribed { channels, .. } => {
                out.push_str(r#""channels":"#);
                channel_list(out, channels);
            }
            Frame::Unsubscribed { channels, cursor, .. } => {
                out.push_str(r#""channels":"#);
                channel_list(out, channels);
                out.push_str(r#","cursor":"#);
                json_str(out, &cursor.to_string());
            }
            Frame::Emitted { id, duplicate, .. } => {
                let _ = write!(out, r#""id":"{id}","duplicate":{duplicate}"#);
            }
            Frame::PresenceSnapshot { snapshot } => {
                out.push_str(r#""channel":"#);
                json_str(out, snapshot.channel.as_str());
                out.push_str(r#","members":"#);
                let _ = serde_json::to_writer(StringWriter(out), &snapshot.members);
                let _ = write!(out, r#","count":{}"#, snapshot.count);
            }
            Frame::PresenceJoin { channel, member } | Frame::PresenceLeave { channel, member } => {
                out.push_str(r#""channel":"#);
                json_str(out, channel.as_str());
                out.push_str(r#","member":"#);
                out.push_str(member.unwrap_or("null"));
            }
            Frame::PresenceJoined { channels, .. } | Frame::PresenceLeft { channels, .. } => {
                out.push_str(r#""channels":"#);
                channel_list(out, channels);
            }
            Frame::Error { status, body, .. } => {
                let _ = write!(out, r#""status":{status}"#);
                for (k, v) in body.iter() {
                    out.push(',');
                    json_str(out, k);
                    out.push(':');
                    let _ = serde_json::to_writer(StringWriter(out), v);
                }
            }
        }
    }

    /// Appends the frame as one WebSocket text message: `{"type":…,"ref":…,…fields}`. Stored
    /// events carry the connection's `cursor` as a field (SSE carries it as `id:`); `Retry` is
    /// SSE only and writes nothing.
    pub fn write_ws(&self, out: &mut String) {
        if let Frame::Retry(_) = self {
            return;
        }
        let _ = write!(out, r#"{{"type":"{}""#, self.ws_type());
        if let Some(reference) = self.reference() {
            out.push_str(r#","ref":"#);
            out.push_str(reference.get());
        }
        if let Frame::Event { cursor, .. } = self {
            out.push_str(r#","cursor":"#);
            json_str(out, &cursor.to_string());
        }
        let mark = out.len();
        out.push(',');
        self.write_fields(out);
        if out.len() == mark + 1 {
            out.truncate(mark); // no fields
        }
        out.push('}');
    }

    /// Appends the frame as Server-Sent Events text.
    pub fn write_sse(&self, out: &mut String) {
        if let Frame::Retry(delay) = self {
            let _ = write!(out, "retry: {}\n\n", delay.as_millis());
            return;
        }
        if let Some(cursor) = self.cursor() {
            let _ = writeln!(out, "id: {cursor}");
        }
        let _ = write!(out, "event: {}\ndata: ", self.event_name().unwrap_or_default());
        self.write_data(out);
        out.push_str("\n\n");
    }
}

/// Appends `channels` as a JSON array of strings.
fn channel_list(out: &mut String, channels: &[Channel]) {
    out.push('[');
    for (i, c) in channels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_str(out, c.as_str());
    }
    out.push(']');
}

/// Appends `s` as a JSON string.
fn json_str(out: &mut String, s: &str) {
    // Serializing a str into a String cannot fail.
    let _ = serde_json::to_writer(StringWriter(out), s);
}

/// `io::Write` into a `String`, for serde_json (which only ever writes UTF-8).
struct StringWriter<'a>(&'a mut String);

impl std::io::Write for StringWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = std::str::from_utf8(buf).map_err(std::io::Error::other)?;
        self.0.push_str(text);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Position;

    fn cursor() -> Cursor {
        Cursor::parse("room:1=5-0@0000abcd,room:2=0-0").unwrap()
    }

    #[test]
    fn control_frames_in_sse() {
        let c = cursor();
        let room = Channel::new("room:1").unwrap();
        let mut out = String::new();
        Frame::Retry(Duration::from_millis(2000)).write_sse(&mut out);
        Frame::Ready {
            cursor: &c,
            channels: &[room.clone(), Channel::new("room:2").unwrap()],
            heartbeat: Duration::from_secs(15),
            reference: None,
        }
        .write_sse(&mut out);
        Frame::Reset {
            cursor: &c,
            channel: &room,
            oldest: Some(StreamId::new(4, 0)),
            reason: Lost::Trimmed,
        }
        .write_sse(&mut out);
        Frame::Ping.write_sse(&mut out);
        Frame::Lagged {
            cursor: &c,
            reason: "a \"quoted\" reason",
        }
        .write_sse(&mut out);
        Frame::Expired { cursor: &c }.write_sse(&mut out);
        let id = "id: room:1=5-0@0000abcd,room:2=0-0\n";
        let cur = r#""cursor":"room:1=5-0@0000abcd,room:2=0-0""#;
        assert_eq!(
            out,
            format!(
                "retry: 2000\n\n\
                 {id}event: tidings.ready\ndata: {{{cur},\"channels\":[\"room:1\",\"room:2\"],\"heartbeat_ms\":15000}}\n\n\
                 {id}event: tidings.reset\ndata: {{\"channel\":\"room:1\",\"oldest\":\"4-0\",{cur},\"reason\":\"trimmed\"}}\n\n\
                 event: tidings.ping\ndata: {{}}\n\n\
                 {id}event: tidings.lagged\ndata: {{\"reason\":\"a \\\"quoted\\\" reason\",{cur}}}\n\n\
                 {id}event: tidings.expired\ndata: {{\"reason\":\"token expired\",{cur}}}\n\n"
            )
        );
    }

    #[test]
    fn an_event_is_its_envelope_under_its_own_name() {
        let mut c = Cursor::default();
        let room = Channel::new("room:1").unwrap();
        c.set(&room, Position::new(StreamId::new(7, 1), None));
        let entry = Entry {
            id: StreamId::new(7, 1),
            event: "chat.message".into(),
            data: r#"{"text":"hi"}"#.into(),
        };
        let mut out = String::new();
        Frame::Event {
            cursor: &c,
            channel: &room,
            entry: &entry,
        }
        .write_sse(&mut out);
        assert_eq!(
            out,
            "id: room:1=7-1\nevent: chat.message\ndata: {\"id\":\"7-1\",\"channel\":\"room:1\",\"event\":\"chat.message\",\"data\":{\"text\":\"hi\"}}\n\n"
        );
    }
}
