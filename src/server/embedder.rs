//! The memory engine's [`Embedder`] as configured: the built-in static model
//! (`memory.embedder: builtin`), or, on top of the router, the `/embeddings` of the model
//! named by `memory.embedding_model`, with that model's retries, fallbacks and timeouts.

use std::sync::Arc;

use serde::Deserialize;

use crate::config::{EmbedderFallback, EmbedderKind, MemorySettings};
use crate::memory::embed::{ModelError, StaticModel};
use crate::memory::retrieve::EmbedError;
use crate::memory::store::BoxFuture;
use crate::memory::Embedder;
use crate::protocol::chat::ChatBody;
use crate::providers::CallContext;
use crate::routing::ModelRouter;

/// The embedder `memory.embedder` names; `None` for lexical retrieval only. Missing or
/// corrupt built-in weights fail start-up under `embedder_fallback: fail`, else they are
/// a loud warning and retrieval is lexical.
pub fn configured(
    settings: &MemorySettings,
    router: &Arc<ModelRouter>,
) -> Result<Option<Arc<dyn Embedder>>, ModelError> {
    Ok(match settings.embedder {
        EmbedderKind::None => None,
        EmbedderKind::External => settings
            .embedding_model
            .clone()
            .map(|m| Arc::new(RouterEmbedder::new(router.clone(), m)) as Arc<dyn Embedder>),
        EmbedderKind::Builtin => match StaticModel::shared(&settings.embedder_path) {
            Ok(m) => {
                tracing::info!(
                    model = m.id(),
                    "memory retrieval is hybrid (built-in embedding model)"
                );
                Some(m as Arc<dyn Embedder>)
            }
            Err(e) if settings.embedder_fallback == EmbedderFallback::Lexical => {
                tracing::warn!(
                    "{e}. MEMORY RETRIEVAL IS LEXICAL ONLY until the weights are in place \
                     (memory.embedder_fallback: fail refuses to start instead)"
                );
                None
            }
            Err(e) => return Err(e),
        },
    })
}

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
