//! Client-facing wire formats. The OpenAI chat format ([`chat`]) is the internal
//! representation every client API and provider meets in: a request is a [`chat::ChatBody`]
//! (raw JSON members, so unknown fields pass through untouched) and a stream is a sequence
//! of chat-completion chunk payloads.

pub mod chat;
