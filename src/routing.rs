//! Model routing: maps a requested model name to its deployments (exact names, LiteLLM
//! `*` wildcards, or the single upstream of upstream mode), load-balances between them
//! (weighted shuffle), retries retryable failures and then tries `fallbacks`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, DeploymentConfig, ProviderKind, Secret};
use crate::providers::{CallContext, LlmRequest, Provider, ProviderEnv, ProviderError, Reply};

/// The `model_name` of the synthetic deployment used in upstream mode.
pub const UPSTREAM_MODE_MODEL: &str = "(upstream)";

/// A configured deployment and its provider.
pub struct Deployment {
    pub config: DeploymentConfig,
    provider: Provider,
}

/// Why a request could not be routed or answered.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("model `{model}` is not configured; available models: {}", available.join(", "))]
    UnknownModel {
        model: String,
        available: Vec<String>,
    },
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

/// A successful call: its result and what produced it.
pub struct Routed<T> {
    pub value: T,
    pub deployment: Arc<Deployment>,
    /// Upstream calls made, retries and fallbacks included.
    pub attempts: u32,
}

struct Group {
    deployments: Vec<Arc<Deployment>>,
    total_weight: f64,
}

/// Deployments by model name, with the retry and fallback policy.
pub struct ModelRouter {
    groups: HashMap<String, Group>,
    wildcards: Vec<(String, Group)>,
    names: Vec<String>,
    fallbacks: BTreeMap<String, Vec<String>>,
    num_retries: u32,
    retry_after: Duration,
    upstream: Option<Group>,
    /// Deployments whose provider can answer (neither skipped nor unsupported).
    served: usize,
}

impl Group {
    fn new(deployments: Vec<Arc<Deployment>>) -> Self {
        let total_weight = deployments.iter().map(|d| d.config.weight).sum();
        Self {
            deployments,
            total_weight,
        }
    }

    /// Weighted random choice, preferring deployments not tried yet for this request.
    fn pick(&self, tried: &[usize]) -> usize {
        let n = self.deployments.len();
        if n == 1 {
            return 0;
        }
        let fresh = |i: &usize| !tried.contains(i);
        let candidates: f64 = (0..n)
            .filter(fresh)
            .map(|i| self.deployments[i].config.weight)
            .sum();
        let (pool_weight, only_fresh) = if candidates > 0.0 {
            (candidates, true)
        } else {
            (self.total_weight, false)
        };
        let mut x = fastrand::f64() * pool_weight;
        for i in 0..n {
            if only_fresh && tried.contains(&i) {
                continue;
            }
            x -= self.deployments[i].config.weight;
            if x <= 0.0 {
                return i;
            }
        }
        (0..n).rev().find(|i| !only_fresh || fresh(i)).unwrap_or(0)
    }
}

impl ModelRouter {
    /// Builds the router from the config's model list (which it takes over).
    pub fn new(config: &mut Config, env: &ProviderEnv) -> Self {
        let mut by_name: Vec<(String, Vec<Arc<Deployment>>)> = Vec::new();
        let mut served = 0;
        for cfg in std::mem::take(&mut config.models) {
            let provider = match Provider::new(&cfg, env) {
                Ok(p) => p,
                Err(reason) => {
                    tracing::warn!(
                        model = %cfg.model_name,
                        "deployment of `{}` ({}) is skipped: {reason}",
                        cfg.model_name,
                        cfg.provider_name
                    );
                    continue;
                }
            };
            if provider.served() {
                served += 1;
            }
            let dep = Arc::new(Deployment {
                provider,
                config: cfg,
            });
            match by_name
                .iter_mut()
                .find(|(n, _)| *n == dep.config.model_name)
            {
                Some((_, list)) => list.push(dep),
                None => by_name.push((dep.config.model_name.clone(), vec![dep])),
            }
        }
        let names = by_name.iter().map(|(n, _)| n.clone()).collect();
        let mut groups = HashMap::new();
        let mut wildcards = Vec::new();
        for (name, list) in by_name {
            if name.contains('*') {
                wildcards.push((name, Group::new(list)));
            } else {
                groups.insert(name, Group::new(list));
            }
        }
        let upstream = config.server.upstream.as_ref().map(|url| {
            let cfg = DeploymentConfig {
                model_name: UPSTREAM_MODE_MODEL.into(),
                provider: ProviderKind::OpenAi,
                provider_name: "openai".into(),
                upstream_model: "*".into(),
                api_base: url.clone(),
                api_key: config.server.upstream_api_key.clone(),
                mock_response: None,
                timeout: config.router.timeout,
                max_retries: None,
                weight: 1.0,
                rpm: None,
                tpm: None,
                api_version: None,
                extra_headers: Default::default(),
                supported_endpoints: None,
                input_cost_per_token: None,
                output_cost_per_token: None,
                cache_read_input_token_cost: None,
                supermemory_router: false,
                upstream_mode: true,
                drop_params: config.drop_params,
                params: Secret::new(Default::default()),
            };
            Group::new(vec![Arc::new(Deployment {
                provider: Provider::new(&cfg, env).unwrap_or_else(Provider::unsupported),
                config: cfg,
            })])
        });
        Self {
            groups,
            wildcards,
            names,
            fallbacks: config.router.fallbacks.clone(),
            num_retries: config.router.num_retries,
            retry_after: config.router.retry_after,
            upstream,
            served,
        }
    }

    /// Whether some request can be answered: a deployment whose provider can serve it,
    /// or upstream mode. A config whose every entry was skipped or is unsupported serves
    /// nothing, and the proxy refuses to start on it.
    pub fn can_serve(&self) -> bool {
        self.served > 0 || self.upstream.is_some()
    }

    /// Model names clients may request, in config order.
    pub fn model_names(&self) -> &[String] {
        &self.names
    }

    /// Whether requests for `model` can be routed.
    pub fn knows(&self, model: &str) -> bool {
        self.upstream.is_some() || self.lookup(model).is_some()
    }

    /// The deployments serving `model`, if any.
    pub fn deployments(&self, model: &str) -> Vec<Arc<Deployment>> {
        if let Some(up) = &self.upstream {
            return up.deployments.clone();
        }
        self.lookup(model)
            .map(|(g, _)| g.deployments.clone())
            .unwrap_or_default()
    }

    /// Whether every deployment of `model` is a Supermemory router, which keeps memory
    /// itself (so memproxy injects none).
    pub fn memory_upstream(&self, model: &str) -> bool {
        // Read in place: this is asked on every request with memory on.
        let deps: &[Arc<Deployment>] = match &self.upstream {
            Some(up) => &up.deployments,
            None => self.lookup(model).map_or(&[], |(g, _)| &g.deployments),
        };
        !deps.is_empty() && deps.iter().all(|d| d.config.supermemory_router)
    }

    fn lookup<'m>(&self, model: &'m str) -> Option<(&Group, Option<&'m str>)> {
        if let Some(g) = self.groups.get(model) {
            return Some((g, None));
        }
        self.wildcards
            .iter()
            .find_map(|(p, g)| crate::glob::capture(p, model).map(|m| (g, Some(m))))
    }

    fn unknown(&self, model: &str) -> RouteError {
        RouteError::UnknownModel {
            model: model.to_string(),
            available: self.names.clone(),
        }
    }

    /// Sends a chat request to a deployment of its model, with retries and fallbacks.
    pub async fn chat(
        &self,
        req: &LlmRequest<'_>,
        ctx: &CallContext<'_>,
    ) -> Result<Routed<Reply>, RouteError> {
        self.call(req.model(), ctx, |dep, upstream_model| async move {
            dep.provider
                .chat(&dep.config, req, &upstream_model, ctx)
                .await
        })
        .await
    }

    /// Sends an embeddings request (OpenAI shape) to a deployment of its model.
    pub async fn embed(
        &self,
        body: &crate::protocol::chat::ChatBody<'_>,
        ctx: &CallContext<'_>,
    ) -> Result<Routed<bytes::Bytes>, RouteError> {
        self.call(&body.model, ctx, |dep, upstream_model| async move {
            dep.provider
                .embed(&dep.config, body, &upstream_model, ctx)
                .await
        })
        .await
    }

    /// Runs `op` against a deployment of `requested`: weighted choice, retries of
    /// retryable failures (preferring deployments not tried yet), then `fallbacks`.
    /// `op` gets the deployment and the provider's name for the model.
    pub async fn call<'s, T, F, Fut>(
        &'s self,
        requested: &str,
        ctx: &CallContext<'_>,
        op: F,
    ) -> Result<Routed<T>, RouteError>
    where
        F: Fn(&'s Deployment, String) -> Fut,
        Fut: std::future::Future<Output = Result<T, ProviderError>>,
    {
        let chain: Vec<(&str, &Group, Option<&str>)> = match &self.upstream {
            Some(up) => vec![(requested, up, Some(requested))],
            None => {
                let Some((group, wildcard)) = self.lookup(requested) else {
                    return Err(self.unknown(requested));
                };
                let mut chain = vec![(requested, group, wildcard)];
                for model in self.fallbacks.get(requested).into_iter().flatten() {
                    match self.lookup(model) {
                        Some((g, w)) => chain.push((model.as_str(), g, w)),
                        None => {
                            tracing::warn!(
                                request_id = ctx.request_id,
                                model = %model,
                                "fallback model is not configured; skipped"
                            )
                        }
                    }
                }
                chain
            }
        };
        let mut attempts = 0;
        let mut last: Option<ProviderError> = None;
        for (model, group, wildcard) in chain {
            if model != requested {
                tracing::info!(
                    request_id = ctx.request_id,
                    from = requested,
                    to = model,
                    "falling back"
                );
            }
            let mut tried = Vec::new();
            let first = group.pick(&tried);
            let retries = group.deployments[first]
                .config
                .max_retries
                .unwrap_or(self.num_retries);
            let mut idx = first;
            for attempt in 0..=retries {
                if attempt > 0 {
                    idx = group.pick(&tried);
                    if !self.retry_after.is_zero() {
                        tokio::time::sleep(self.retry_after).await;
                    }
                }
                tried.push(idx);
                let dep = &group.deployments[idx];
                let upstream_model = match wildcard {
                    Some(m) if dep.config.upstream_model.contains('*') => {
                        dep.config.upstream_model.replace('*', m)
                    }
                    _ => dep.config.upstream_model.clone(),
                };
                attempts += 1;
                match op(dep, upstream_model).await {
                    Ok(value) => {
                        return Ok(Routed {
                            value,
                            deployment: dep.clone(),
                            attempts,
                        })
                    }
                    Err(e) => {
                        tracing::warn!(
                            request_id = ctx.request_id,
                            model,
                            api_base = %dep.config.api_base,
                            attempt,
                            error = %e,
                            "upstream call failed"
                        );
                        let retry = e.is_retryable();
                        last = Some(e);
                        if !retry {
                            break;
                        }
                    }
                }
            }
            if !last.as_ref().is_some_and(ProviderError::allows_fallback) {
                break;
            }
        }
        Err(last
            .map(RouteError::Provider)
            .unwrap_or_else(|| self.unknown(requested)))
    }
}
