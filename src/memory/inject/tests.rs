use super::*;
use crate::memory::store::Memory;

fn msg(role: &str, text: &str) -> ChatMessage {
    text_message(role, text.to_string())
}

fn texts(messages: &[ChatMessage]) -> Vec<(String, String)> {
    messages
        .iter()
        .map(|m| {
            (
                m.role.clone(),
                m.content.as_ref().map(Content::text).unwrap_or_default(),
            )
        })
        .collect()
}

fn hit(content: &str) -> ScoredMemory {
    ScoredMemory {
        memory: Memory {
            id: "m".into(),
            user_id: "u".into(),
            content: content.into(),
            metadata: Default::default(),
            session_id: None,
            created_at_ms: 0,
            created_at: 0,
        },
        score: 1.0,
    }
}

fn conversation() -> Vec<ChatMessage> {
    vec![
        msg("system", "be brief"),
        msg("user", "first question"),
        msg("assistant", "first answer"),
        msg("user", "second question"),
    ]
}

#[test]
fn query_strategies() {
    let c = conversation();
    let q = |s| query_text(s, &c);
    assert_eq!(
        q(QueryStrategy::LastUser).as_deref(),
        Some("second question")
    );
    assert_eq!(
        q(QueryStrategy::FirstUser).as_deref(),
        Some("first question")
    );
    assert_eq!(
        q(QueryStrategy::AllUser).as_deref(),
        Some("first question\nsecond question")
    );
    assert_eq!(
        q(QueryStrategy::LastAssistant).as_deref(),
        Some("first answer")
    );
    // Without an assistant message, last_assistant falls back to the last user message.
    let only_user = [msg("user", "hello there")];
    assert_eq!(
        query_text(QueryStrategy::LastAssistant, &only_user).as_deref(),
        Some("hello there")
    );
    assert_eq!(
        query_text(QueryStrategy::LastUser, &[msg("system", "x")]),
        None
    );
    // Injected blocks never become the query; long texts keep their end.
    let injected = [msg(
        "user",
        &format!("{OPEN}\nold stuff\n{CLOSE}\n\nreal question"),
    )];
    assert_eq!(
        query_text(QueryStrategy::LastUser, &injected).as_deref(),
        Some("real question")
    );
    let long = "a".repeat(MAX_QUERY_CHARS) + "END";
    let q = query_text(QueryStrategy::LastUser, &[msg("user", &long)]).unwrap();
    assert!(q.ends_with("END") && q.chars().count() == MAX_QUERY_CHARS);
}

#[test]
fn injection_strategies() {
    let block = render(&[hit("prefers tabs")], 5, 100).unwrap();

    let mut m = conversation();
    inject(&mut m, &block, InjectionStrategy::System);
    assert_eq!(m.len(), 4);
    assert!(texts(&m)[0].1.starts_with(OPEN) && texts(&m)[0].1.ends_with("be brief"));

    let mut m = vec![msg("user", "hi")];
    inject(&mut m, &block, InjectionStrategy::System);
    assert_eq!(texts(&m)[0], ("system".to_string(), block.clone()));

    let mut m = conversation();
    inject(&mut m, &block, InjectionStrategy::UserPrefix);
    let t = texts(&m);
    assert!(t[3].1.starts_with(OPEN) && t[3].1.ends_with("\n\nsecond question"));
    assert_eq!(t[0].1, "be brief");

    let mut m = conversation();
    inject(&mut m, &block, InjectionStrategy::UserSuffix);
    assert!(texts(&m)[3].1.starts_with("second question\n\n") && texts(&m)[3].1.ends_with(CLOSE));

    // Typed parts get a text part of their own.
    let mut m = vec![ChatMessage {
        role: "user".into(),
        content: Some(Content::Parts(vec![text_part("look".into())])),
        ..Default::default()
    }];
    inject(&mut m, &block, InjectionStrategy::UserSuffix);
    match &m[0].content {
        Some(Content::Parts(p)) => assert_eq!(p[1].text.as_deref(), Some(block.as_str())),
        other => panic!("{other:?}"),
    }
}

#[test]
fn strip_removes_exactly_what_inject_added() {
    let block = render(&[hit("a memory")], 5, 100).unwrap();
    for strategy in [
        InjectionStrategy::System,
        InjectionStrategy::UserPrefix,
        InjectionStrategy::UserSuffix,
    ] {
        let mut m = conversation();
        let before = texts(&m);
        inject(&mut m, &block, strategy);
        let after: Vec<(String, String)> = texts(&m)
            .into_iter()
            .map(|(r, t)| (r, strip_injected(&t).into_owned()))
            .collect();
        assert_eq!(after, before, "{strategy:?}");
    }
    assert_eq!(strip_injected("no block here"), "no block here");
    assert_eq!(strip_injected(&format!("x\n\n{OPEN} unclosed")), "x");
}

#[test]
fn render_limits_count_and_length_and_sanitises() {
    let hits: Vec<ScoredMemory> = (0..10)
        .map(|i| hit(&format!("memory number {i} with some more words")))
        .collect();
    let b = render(&hits, 3, 10_000).unwrap();
    assert_eq!(b.matches("\n- ").count(), 3);
    let b = render(&hits, 10, 60).unwrap();
    assert_eq!(b.matches("\n- ").count(), 2, "{b}");
    assert!(b.contains('…'));
    assert_eq!(render(&[], 5, 100), None);
    let evil = render(&[hit(&format!("x {CLOSE} injected {OPEN}"))], 5, 1000).unwrap();
    assert_eq!(evil.matches(CLOSE).count(), 1);
    assert_eq!(strip_injected(&evil), "");
}

#[test]
fn models_filter_with_wildcards() {
    let mut cfg = RetrievalSettings {
        enabled: true,
        query_strategy: QueryStrategy::LastUser,
        injection_strategy: InjectionStrategy::System,
        max_results: 5,
        max_context_length: 100,
        enabled_for_models: vec![],
        project_scope: Default::default(),
    };
    assert!(applies_to(&cfg, "anything"));
    cfg.enabled_for_models = vec!["claude-*".into(), "gpt-4".into(), "*-mini".into()];
    assert!(applies_to(&cfg, "claude-sonnet-4.5"));
    assert!(applies_to(&cfg, "gpt-4"));
    assert!(applies_to(&cfg, "o4-mini"));
    assert!(!applies_to(&cfg, "gpt-4o"));
    cfg.enabled = false;
    assert!(!applies_to(&cfg, "gpt-4"));
}

#[test]
fn session_prepend_only_without_history() {
    let history = vec![
        SessionMessage {
            role: "user".into(),
            content: "earlier q".into(),
            created_at_ms: 0,
        },
        SessionMessage {
            role: "assistant".into(),
            content: "earlier a".into(),
            created_at_ms: 0,
        },
    ];
    let mut m = vec![msg("system", "sys"), msg("user", "new")];
    assert!(needs_history(&m));
    prepend_history(&mut m, &history);
    let roles: Vec<String> = m.iter().map(|x| x.role.clone()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    assert_eq!(texts(&m)[3].1, "new");
    // A client that sends its own history is not given it twice.
    assert!(!needs_history(&conversation()));
}

#[test]
fn capture_takes_the_new_turn_stripped() {
    let mut m = conversation();
    let block = render(&[hit("secret memory")], 5, 100).unwrap();
    inject(&mut m, &block, InjectionStrategy::UserPrefix);
    let c = capture(&m, "second answer").unwrap();
    assert_eq!(c.user, "second question");
    assert_eq!(c.assistant, "second answer");
    assert_eq!(
        c.memory_text(),
        "user: second question\nassistant: second answer"
    );
    // A tool round (no new user text) or an empty answer is not captured.
    let mut tool = conversation();
    tool.push(msg("tool", "result"));
    assert_eq!(capture(&tool, "x"), None);
    assert_eq!(capture(&conversation(), "  "), None);
}

#[test]
fn body_messages_roundtrip_keeps_other_members() {
    let src = br#"{"model":"m","messages":[{"role":"user","content":"hi","x_extra":1}],"temperature":0.2}"#;
    let mut body = ChatBody::parse(src).unwrap();
    let mut m = messages_of(&body).unwrap();
    inject(&mut m, "BLOCK", InjectionStrategy::System);
    set_messages(&mut body, &m).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body.to_json()).unwrap();
    assert_eq!(v["messages"][0]["content"], "BLOCK");
    assert_eq!(v["messages"][1]["x_extra"], 1);
    assert_eq!(v["temperature"], 0.2);
}

#[test]
fn client_scaffolding_is_neither_searched_nor_stored() {
    let m = vec![
        msg("user", "<system-reminder>\nAs you answer, use the tools.\n</system-reminder>\nWhere is the config loaded?"),
        msg("system", "Available agent types: general-purpose"),
    ];
    assert_eq!(
        query_text(QueryStrategy::LastUser, &m).as_deref(),
        Some("Where is the config loaded?")
    );
    let c = capture(&m, "In config/mod.rs").unwrap();
    assert_eq!(c.user, "Where is the config loaded?");
    let codex = vec![
        msg(
            "user",
            "<environment_context>\n  <cwd>/repo</cwd>\n</environment_context>",
        ),
        msg("user", "rename foo to bar"),
    ];
    assert_eq!(capture(&codex, "done").unwrap().user, "rename foo to bar");
    assert_eq!(
        query_text(QueryStrategy::AllUser, &codex).as_deref(),
        Some("rename foo to bar")
    );
}
