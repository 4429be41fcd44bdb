//! The memory engine's [`Embedder`] on top of the router: vectors come from the
//! `/embeddings` of the model named by `memory.embedding_model`, with that model's
//! retries, fallbacks and timeouts.

use std::sync::Arc;

use serde::Deserialize;

use crate::memory::retrieve::EmbedError;
use crate::memory::store::BoxFuture;
use crate::memory::Embedder;
use crate::protocol::chat::ChatBody;
use crate::providers::CallContext;
use crate::routing::ModelRouter;

/// Embeds through a `model_list` model.
pub struct RouterEmbedder {
    router: Arc<ModelRouter>,
    model: String,
}

impl RouterEmbedder {
    pub fn new(router: Arc<ModelRouter>, model: String) -> Self {
        Self { router, model }
    }
}

#[derive(Deserialize)]
struct Answer {
    data: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    #[serde(default)]
    index: usize,
    embedding: Vec<f32>,
}

impl Embedder for RouterEmbedder {
    fn model(&self) -> &str {
        &self.model
    }

    fn embed<'a>(
        &'a self,
        texts: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Vec<f32>>, EmbedError>> {
        Box::pin(async move {
            let request = serde_json::to_vec(&serde_json::json!({
                "model": self.model,
                "input": texts,
            }))
            .map_err(|e| EmbedError(e.to_string()))?;
            let body = ChatBody::parse_object(&request).map_err(|e| EmbedError(e.to_string()))?;
            let ctx = CallContext {
                user_id: "memproxy",
                request_id: "memory-embedding",
                client_authorization: None,
                anthropic_beta: None,
            };
            let routed = self
                .router
                .embed(&body, &ctx)
                .await
                .map_err(|e| EmbedError(e.to_string()))?;
            let mut answer: Answer = serde_json::from_slice(&routed.value)
                .map_err(|e| EmbedError(format!("unreadable embeddings answer: {e}")))?;
            if answer.data.len() != texts.len() {
                return Err(EmbedError(format!(
                    "asked for {} embeddings, got {}",
                    texts.len(),
                    answer.data.len()
                )));
            }
            answer.data.sort_by_key(|i| i.index);
            Ok(answer.data.into_iter().map(|i| i.embedding).collect())
        })
    }
}
