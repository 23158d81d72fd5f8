//! The JSON an event travels as: `{"id","channel","event","data"}`.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::channel::Channel;
use crate::id::StreamId;
use crate::payload::Payload;
use crate::store::Entry;

/// One delivered or stored event, as clients see it.
#[derive(Clone, Debug, Serialize)]
pub struct Envelope {
    /// Its id in the channel's stream.
    pub id: StreamId,
    /// The channel it was emitted to.
    pub channel: Channel,
    /// The event's wire name.
    pub event: String,
    /// The payload.
    pub data: Box<serde_json::value::RawValue>,
}

impl PartialEq for Envelope {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.channel == other.channel
            && self.event == other.event
            && self.data.get() == other.data.get()
    }
}

impl Eq for Envelope {}

impl Envelope {
    /// Builds an envelope from a stored entry.
    pub fn from_entry(channel: &Channel, entry: &Entry) -> Envelope {
        let data = serde_json::value::RawValue::from_string(entry.data.to_string())
            .unwrap_or_else(|_| json_string_raw(&entry.data));
        Envelope {
            id: entry.id,
            channel: channel.clone(),
            event: entry.event.to_string(),
            data,
        }
    }

    /// Decodes the payload as `T` when this envelope carries `T`'s event.
    ///
    /// Returns `None` for another event, `Some(Err)` when the payload does not fit `T`.
    pub fn decode<T: Payload + DeserializeOwned>(&self) -> Option<Result<T, serde_json::Error>> {
        (self.event == T::NAME).then(|| serde_json::from_str(self.data.get()))
    }
}

fn json_string_raw(s: &str) -> Box<serde_json::value::RawValue> {
    let quoted = serde_json::to_string(s).unwrap_or_else(|_| "null".into());
    serde_json::value::RawValue::from_string(quoted).expect("a JSON string literal is valid JSON")
}

/// Writes the envelope JSON of `entry` on `channel` into `out`, on one line.
#[cfg(test)]
pub(crate) fn write_envelope(out: &mut String, channel: &Channel, entry: &Entry) {
    out.push('{');
    write_envelope_fields(out, channel, entry);
    out.push('}');
}

/// Writes the envelope's members (`"id":…,"channel":…,"event":…,"data":…`) without braces.
pub(crate) fn write_envelope_fields(out: &mut String, channel: &Channel, entry: &Entry) {
    // Channel and event names come from checked character sets (no quotes, backslashes or
    // control characters) and data is one line of JSON, so plain concatenation is valid JSON.
    let _ = write!(
        out,
        r#""id":"{}","channel":"{}","event":"{}","data":{}"#,
        entry.id, channel, entry.event, entry.data
    );
}

/// Returns `data` as JSON on one line: unchanged when it already is, compacted when it spans
/// lines; `None` when it is not JSON at all (data written by another tool).
pub(crate) fn one_line_json(data: &str) -> Option<Cow<'_, str>> {
    if !data.contains(['\n', '\r']) && serde_json::from_str::<serde::de::IgnoredAny>(data).is_ok() {
        return Some(Cow::Borrowed(data));
    }
    serde_json::from_str::<serde_json::Value>(data)
        .ok()
        .map(|v| Cow::Owned(v.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_json_keeps_compact_and_flattens_the_rest() {
        assert_eq!(one_line_json(r#"{"a":1}"#).unwrap(), r#"{"a":1}"#);
        assert_eq!(one_line_json("{\n\"a\": 1\n}").unwrap(), r#"{"a":1}"#);
        assert_eq!(one_line_json("not json\nat all"), None);
    }

    #[test]
    fn envelope_is_valid_json() {
        let ch = Channel::new("room:1").unwrap();
        let entry = Entry {
            id: StreamId::new(1, 2),
            event: "chat.message".into(),
            data: r#"{"text":"a \"quoted\" line"}"#.into(),
        };
        let mut out = String::new();
        write_envelope(&mut out, &ch, &entry);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["id"], "1-2");
        assert_eq!(v["channel"], "room:1");
        assert_eq!(v["data"]["text"], "a \"quoted\" line");
        assert_eq!(
            serde_json::to_string(&Envelope::from_entry(&ch, &entry)).unwrap(),
            out
        );
    }
}
