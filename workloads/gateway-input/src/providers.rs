//! Provider payloads turned into one message envelope. Parsing happens only after
//! verification; unknown update kinds and status notifications are acknowledged and ignored.

use serde_json::Value;

/// One inbound end-user message, ready for the inbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Inbound {
    /// The provider's id of the message: the inbox's idempotency key (with the channel).
    pub provider_message_id: String,
    /// Who wrote (Telegram chat id, WhatsApp number, Instagram-scoped id).
    pub sender: String,
    pub text: String,
}

#[derive(Debug, PartialEq)]
pub struct Malformed(pub String);

/// PostgreSQL text cannot hold NUL: a `\u0000` in a payload must not make the whole batch
/// fail to store, so it becomes U+FFFD.
fn clean(s: &str) -> String {
    if s.contains('\0') {
        s.replace('\0', "\u{fffd}")
    } else {
        s.to_string()
    }
}

/// The inbox key of a Telegram message: `tg:<chat id>:<message id>`. A message id is unique
/// within its chat and never changes, while `update_id` starts again from a random number
/// when the bot's webhook is set up again (or after a week without updates), so keying on it
/// would drop new messages as duplicates of old ones.
pub fn telegram_message_id(chat: i64, message_id: i64) -> String {
    format!("tg:{chat}:{message_id}")
}

/// A Telegram Update: text messages become one message; any other kind none.
pub fn telegram(body: &[u8]) -> Result<Vec<Inbound>, Malformed> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| Malformed(format!("invalid JSON: {e}")))?;
    v.get("update_id")
        .and_then(Value::as_i64)
        .ok_or_else(|| Malformed("an Update needs a numeric update_id".into()))?;
    let Some(msg) = v.get("message") else {
        return Ok(vec![]);
    };
    let (Some(text), Some(chat), Some(message_id)) = (
        msg.get("text").and_then(Value::as_str),
        msg.pointer("/chat/id").and_then(Value::as_i64),
        msg.get("message_id").and_then(Value::as_i64),
    ) else {
        return Ok(vec![]);
    };
    Ok(vec![Inbound {
        provider_message_id: telegram_message_id(chat, message_id),
        sender: chat.to_string(),
        text: clean(text),
    }])
}

/// The messages of a Meta notification, and how many of its items were addressed to another
/// account than the channel's (dropped, not stored).
#[derive(Debug, Default, PartialEq)]
pub struct MetaMessages {
    pub messages: Vec<Inbound>,
    /// WhatsApp changes for another `phone_number_id`; Instagram entries for another account
    /// id, and messaging events to another recipient.
    pub foreign: usize,
}

/// The `entry` array of a Meta notification, each entry with its `id`.
fn meta_entries(body: &[u8]) -> Result<Vec<Value>, Malformed> {
    let mut v: Value =
        serde_json::from_slice(body).map_err(|e| Malformed(format!("invalid JSON: {e}")))?;
    match v.get_mut("entry").map(Value::take) {
        Some(Value::Array(entries)) => Ok(entries),
        _ => Err(Malformed("a notification needs an entry array".into())),
    }
}

/// The `key` array of an entry (`changes` for WhatsApp, `messaging` for Instagram).
fn items(entry: &mut Value, key: &str) -> Vec<Value> {
    match entry.get_mut(key).map(Value::take) {
        Some(Value::Array(items)) => items,
        _ => vec![],
    }
}

/// A WhatsApp Cloud API notification: every text message of every entry and change;
/// statuses (sent, delivered, read) are ignored.
pub fn whatsapp(body: &[u8]) -> Result<Vec<Inbound>, Malformed> {
    whatsapp_for(body, None).map(|m| m.messages)
}

/// [`whatsapp`] for the channel of `phone_number_id`: a change whose
/// `value.metadata.phone_number_id` is another (or absent) is dropped and counted. One Meta app
/// can serve several numbers; only this channel's are its messages.
pub fn whatsapp_for(body: &[u8], phone_number_id: Option<&str>) -> Result<MetaMessages, Malformed> {
    let mut out = MetaMessages::default();
    for mut entry in meta_entries(body)? {
        for change in items(&mut entry, "changes") {
            if let Some(ours) = phone_number_id
                && change
                    .pointer("/value/metadata/phone_number_id")
                    .and_then(Value::as_str)
                    != Some(ours)
            {
                out.foreign += 1;
                continue;
            }
            for m in change
                .pointer("/value/messages")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let (Some(id), Some(from)) = (
                    m.get("id").and_then(Value::as_str),
                    m.get("from").and_then(Value::as_str),
                ) else {
                    continue;
                };
                if let Some(text) = m.pointer("/text/body").and_then(Value::as_str) {
                    out.messages.push(Inbound {
                        provider_message_id: clean(&format!("wa:{id}")),
                        sender: clean(from),
                        text: clean(text),
                    });
                }
            }
        }
    }
    Ok(out)
}

/// An Instagram Messaging notification: text messages from users; echoes of the business's
/// own replies are ignored (answering them would loop).
pub fn instagram(body: &[u8]) -> Result<Vec<Inbound>, Malformed> {
    instagram_for(body, None).map(|m| m.messages)
}

/// [`instagram`] for the channel of `page_id`: an entry whose `id` is another account (or
/// absent), and a message whose `recipient.id` is another, are dropped and counted.
pub fn instagram_for(body: &[u8], page_id: Option<&str>) -> Result<MetaMessages, Malformed> {
    let mut out = MetaMessages::default();
    for mut entry in meta_entries(body)? {
        if let Some(ours) = page_id
            && entry.get("id").and_then(Value::as_str) != Some(ours)
        {
            out.foreign += 1;
            continue;
        }
        for ev in items(&mut entry, "messaging") {
            let Some(msg) = ev.get("message") else {
                continue;
            };
            if msg.get("is_echo").and_then(Value::as_bool) == Some(true) {
                continue;
            }
            if let Some(ours) = page_id
                && ev
                    .pointer("/recipient/id")
                    .and_then(Value::as_str)
                    .is_some_and(|r| r != ours)
            {
                out.foreign += 1;
                continue;
            }
            let (Some(mid), Some(text), Some(from)) = (
                msg.get("mid").and_then(Value::as_str),
                msg.get("text").and_then(Value::as_str),
                ev.pointer("/sender/id").and_then(Value::as_str),
            ) else {
                continue;
            };
            out.messages.push(Inbound {
                provider_message_id: clean(&format!("ig:{mid}")),
                sender: clean(from),
                text: clean(text),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telegram_text_persian_and_other_updates() {
        let text = br#"{"update_id":10000,"message":{"message_id":1365,"date":1441645532,"chat":{"id":-1001234567890,"type":"supergroup"},"from":{"id":5000000001,"is_bot":false,"first_name":"A"},"text":"\u0633\u0644\u0627\u0645"}}"#;
        let got = telegram(text).unwrap();
        assert_eq!(
            got,
            vec![Inbound {
                provider_message_id: "tg:-1001234567890:1365".into(),
                sender: "-1001234567890".into(),
                text: "سلام".into()
            }]
        );
        let edited = br#"{"update_id":10001,"edited_message":{"message_id":1,"date":1,"chat":{"id":1,"type":"private"},"text":"x"}}"#;
        assert_eq!(telegram(edited).unwrap(), vec![]);
        let photo = br#"{"update_id":10002,"message":{"message_id":2,"date":1,"chat":{"id":1,"type":"private"},"photo":[]}}"#;
        assert_eq!(telegram(photo).unwrap(), vec![]);
        assert!(telegram(b"{not json").is_err());
        let nul =
            br#"{"update_id":1,"message":{"message_id":3,"chat":{"id":1},"text":"a\u0000b"}}"#;
        assert_eq!(telegram(nul).unwrap()[0].text, "a\u{fffd}b");
        assert!(telegram(br#"{"message":{}}"#).is_err());
        // A message without its id cannot be stored idempotently: acknowledged, not stored.
        let no_id = br#"{"update_id":1,"message":{"chat":{"id":1},"text":"x"}}"#;
        assert_eq!(telegram(no_id).unwrap(), vec![]);
    }

    #[test]
    fn telegram_keys_survive_an_update_id_reset() {
        let update = |update_id: i64, chat: i64, message_id: i64| {
            format!(
                r#"{{"update_id":{update_id},"message":{{"message_id":{message_id},"date":1,"chat":{{"id":{chat},"type":"private"}},"text":"hi"}}}}"#
            )
        };
        let key = |u: String| {
            telegram(u.as_bytes()).unwrap()[0]
                .provider_message_id
                .clone()
        };
        // The same update_id after a reset, for another message: another key.
        assert_ne!(key(update(500, 1, 10)), key(update(500, 1, 11)));
        // The same message id in another chat: another key.
        assert_ne!(key(update(500, 1, 10)), key(update(501, 2, 10)));
        // The same message delivered again under a new update_id: the same key.
        assert_eq!(key(update(500, 1, 10)), key(update(9000, 1, 10)));
        assert_eq!(key(update(500, -100, 10)), "tg:-100:10");
    }

    #[test]
    fn whatsapp_batches_and_statuses() {
        let body = br#"{"object":"whatsapp_business_account","entry":[
          {"id":"1","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"phone_number_id":"106540352242922"},
             "messages":[{"from":"16505551234","id":"wamid.A","timestamp":"1700000000","type":"text","text":{"body":"Hello"}},
                         {"from":"16505551234","id":"wamid.B","timestamp":"1700000001","type":"image","image":{"id":"x"}}]}}]},
          {"id":"2","changes":[{"field":"messages","value":{"statuses":[{"id":"wamid.Z","status":"delivered"}]}},
                               {"field":"messages","value":{"messages":[{"from":"4915112345678","id":"wamid.C","type":"text","text":{"body":"\u0645\u0631\u0633\u06cc"}}]}}]}]}"#;
        let got = whatsapp(body).unwrap();
        assert_eq!(
            got.iter()
                .map(|m| m.provider_message_id.as_str())
                .collect::<Vec<_>>(),
            ["wa:wamid.A", "wa:wamid.C"]
        );
        assert_eq!(got[1].text, "مرسی");
        assert_eq!(whatsapp(br#"{"object":"x","entry":[]}"#).unwrap(), vec![]);
        assert!(whatsapp(br#"{"object":"x"}"#).is_err());
    }

    #[test]
    fn meta_items_for_another_number_or_page_are_dropped_and_counted() {
        let wa = br#"{"object":"whatsapp_business_account","entry":[
          {"id":"W","changes":[
            {"field":"messages","value":{"metadata":{"phone_number_id":"111"},"messages":[{"from":"1","id":"wamid.ours","type":"text","text":{"body":"ours"}}]}},
            {"field":"messages","value":{"metadata":{"phone_number_id":"222"},"messages":[{"from":"2","id":"wamid.theirs","type":"text","text":{"body":"theirs"}}]}},
            {"field":"messages","value":{"messages":[{"from":"3","id":"wamid.unknown","type":"text","text":{"body":"no metadata"}}]}}]}]}"#;
        let got = whatsapp_for(wa, Some("111")).unwrap();
        assert_eq!(
            got.messages
                .iter()
                .map(|m| m.provider_message_id.as_str())
                .collect::<Vec<_>>(),
            ["wa:wamid.ours"]
        );
        assert_eq!(got.foreign, 2);
        // Without a phoneNumberId on the channel, nothing is filtered.
        assert_eq!(whatsapp_for(wa, None).unwrap().messages.len(), 3);

        let ig = br#"{"object":"instagram","entry":[
          {"id":"P1","messaging":[
            {"sender":{"id":"U1"},"recipient":{"id":"P1"},"message":{"mid":"m1","text":"ours"}},
            {"sender":{"id":"U2"},"recipient":{"id":"P9"},"message":{"mid":"m2","text":"to another page"}},
            {"sender":{"id":"P1"},"recipient":{"id":"U1"},"message":{"mid":"m3","text":"echo","is_echo":true}}]},
          {"id":"P2","messaging":[
            {"sender":{"id":"U3"},"recipient":{"id":"P2"},"message":{"mid":"m4","text":"another account"}}]}]}"#;
        let got = instagram_for(ig, Some("P1")).unwrap();
        assert_eq!(
            got.messages
                .iter()
                .map(|m| m.provider_message_id.as_str())
                .collect::<Vec<_>>(),
            ["ig:m1"]
        );
        assert_eq!(got.foreign, 2, "the entry of P2 and the message to P9");
        assert_eq!(instagram_for(ig, None).unwrap().messages.len(), 3);
    }

    #[test]
    fn instagram_skips_echoes() {
        let body = br#"{"object":"instagram","entry":[{"id":"17841400000000000","time":1700000000000,"messaging":[
          {"sender":{"id":"IGSID1"},"recipient":{"id":"17841400000000000"},"timestamp":1700000000000,"message":{"mid":"m1","text":"hi"}},
          {"sender":{"id":"17841400000000000"},"recipient":{"id":"IGSID1"},"timestamp":1700000000001,"message":{"mid":"m2","text":"our reply","is_echo":true}}]}]}"#;
        let got = instagram(body).unwrap();
        assert_eq!(
            got,
            vec![Inbound {
                provider_message_id: "ig:m1".into(),
                sender: "IGSID1".into(),
                text: "hi".into()
            }]
        );
    }
}
