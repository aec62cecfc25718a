//! Replies through each provider's API. Base URLs are configurable so tests and the demo
//! point them at local stand-ins. Errors never carry a token: the Telegram URL holds the bot
//! token, so URLs are stripped from transport errors.

use std::time::Duration;

use serde_json::{Value, json};
use xin_api::channel::ChannelType;
use xin_api::routes::ChannelRoute;

/// Where the provider APIs live.
#[derive(Clone, Debug)]
pub struct ProviderApis {
    /// `https://api.telegram.org` (the bot token and method are appended).
    pub telegram: String,
    /// `https://graph.facebook.com/v21.0` (WhatsApp Cloud API and Instagram Send API).
    pub meta: String,
}

/// Why a reply was not delivered; `retry` is false when repeating cannot help (a 4xx other
/// than 408/429, missing credentials).
#[derive(Debug)]
pub struct SendError {
    pub message: String,
    pub retry: bool,
}

fn fail(message: impl Into<String>, retry: bool) -> SendError {
    SendError {
        message: message.into(),
        retry,
    }
}

/// Cuts `text` to at most `max` characters (providers refuse longer messages).
pub fn fit(text: &str, max: usize) -> String {
    fit_by(text, max, |_| 1)
}

/// Cuts `text` to at most `max` UTF-16 code units: Telegram counts message length so.
pub fn fit_utf16(text: &str, max: usize) -> String {
    fit_by(text, max, char::len_utf16)
}

fn fit_by(text: &str, max: usize, units: impl Fn(char) -> usize) -> String {
    if text.chars().map(&units).sum::<usize>() <= max {
        return text.to_string();
    }
    // Room for the ellipsis (one unit in both counts).
    let mut used = 1;
    let mut out = String::new();
    for c in text.chars() {
        used += units(c);
        if used > max {
            break;
        }
        out.push(c);
    }
    out.push('…');
    out
}

/// Sends `text` to `recipient` on the channel's provider. Web channels have no provider:
/// the widget fetches its answers from the gateway.
pub async fn send(
    client: &reqwest::Client,
    apis: &ProviderApis,
    route: &ChannelRoute,
    recipient: &str,
    text: &str,
    headers: reqwest::header::HeaderMap,
) -> Result<(), SendError> {
    let creds = &route.credentials;
    let access_token = || {
        creds
            .access_token
            .as_deref()
            .ok_or_else(|| fail("the channel has no access token", false))
    };
    let (url, bearer, body) = match route.type_ {
        ChannelType::Web => return Ok(()),
        ChannelType::Telegram => {
            let token = creds
                .bot_token
                .as_deref()
                .ok_or_else(|| fail("the channel has no bot token", false))?;
            // Chat ids are numbers (negative for groups); send them as numbers.
            let chat: Value = recipient
                .parse::<i64>()
                .map(Value::from)
                .unwrap_or_else(|_| Value::from(recipient));
            (
                format!(
                    "{}/bot{token}/sendMessage",
                    apis.telegram.trim_end_matches('/')
                ),
                None,
                json!({"chat_id": chat, "text": fit_utf16(text, 4096)}),
            )
        }
        ChannelType::Whatsapp => {
            let phone = route
                .phone_number_id
                .as_deref()
                .ok_or_else(|| fail("the channel has no phoneNumberId", false))?;
            (
                format!("{}/{phone}/messages", apis.meta.trim_end_matches('/')),
                Some(access_token()?),
                json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": recipient,
                       "type": "text", "text": {"preview_url": false, "body": fit(text, 4096)}}),
            )
        }
        ChannelType::Instagram => {
            let page = route.page_id.as_deref().unwrap_or("me");
            (
                format!("{}/{page}/messages", apis.meta.trim_end_matches('/')),
                Some(access_token()?),
                json!({"recipient": {"id": recipient}, "message": {"text": fit(text, 1000)}}),
            )
        }
    };
    let mut req = client
        .post(&url)
        .headers(headers)
        .timeout(Duration::from_secs(15))
        .json(&body);
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    let resp = req.send().await.map_err(|e| {
        fail(
            format!(
                "{} API unreachable: {}",
                route.type_.as_str(),
                e.without_url()
            ),
            true,
        )
    })?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let detail: String = resp
        .text()
        .await
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect();
    let retry = status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408;
    Err(fail(
        format!("{} API answered {status}: {detail}", route.type_.as_str()),
        retry,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_answers_are_cut_on_character_boundaries() {
        assert_eq!(fit("سلام", 10), "سلام");
        assert_eq!(fit("سلام دنیا", 4), "سلا…");
        assert_eq!(fit("abcdef", 5).chars().count(), 5);
        // An emoji is two UTF-16 units.
        let long = "😀".repeat(3000);
        let cut = fit_utf16(&long, 4096);
        assert!(cut.encode_utf16().count() <= 4096);
        assert_eq!(cut.chars().count(), 2048);
        assert_eq!(fit_utf16("short", 4096), "short");
    }
}
