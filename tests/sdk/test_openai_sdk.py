"""The official OpenAI Python SDK against a running memproxy: `gpt-test` natively (an
OpenAI-compatible deployment), `claude-test` translated (an Anthropic one)."""

import json
import uuid

import openai
import pytest
from conftest import rows_for

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.fixture()
def client(proxy):
    return openai.OpenAI(base_url=proxy["base"] + "/v1", api_key=proxy["key"], max_retries=0)


def test_chat_completion(client):
    r = client.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "Say hello"}]
    )
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.total_tokens > 0


def test_streaming_chat(client):
    stream = client.chat.completions.create(
        model="gpt-test",
        messages=[{"role": "user", "content": "Say hello"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage, finish = "", None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    assert text
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens > 0


def test_memory_user_header_is_detected(client):
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-test",
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-memory-user-id": "sdk-user-42"},
    )
    assert raw.headers["x-memproxy-user-id"] == "sdk-user-42"
    assert raw.headers["x-request-id"]
    assert raw.parse().choices[0].message.content


def test_offline_mock_model(client):
    r = client.chat.completions.create(
        model="offline", messages=[{"role": "user", "content": "ping"}]
    )
    assert r.choices[0].message.content == "Hello from the offline mock."


def test_models_list(client):
    ids = {m.id for m in client.models.list()}
    assert {"gpt-test", "offline"} <= ids


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}]
        )
    assert "no-such-model" in str(e.value)


def test_wrong_key_is_401(proxy):
    bad = openai.OpenAI(base_url=proxy["base"] + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])


def test_embeddings(client):
    r = client.embeddings.create(model="offline", input=["a", "b"])
    assert len(r.data) == 2 and len(r.data[0].embedding) > 0


def _chat(client, rid, model, messages, stream):
    """One chat call; returns (finish_reason, text, tool_calls as dicts)."""
    kw = dict(model=model, messages=messages, tools=[WEATHER], extra_headers={"x-request-id": rid})
    if not stream:
        c = client.chat.completions.create(**kw).choices[0]
        calls = [{"id": t.id, "name": t.function.name, "arguments": t.function.arguments}
                 for t in c.message.tool_calls or []]
        return c.finish_reason, c.message.content or "", calls
    text, finish, calls = "", None, {}
    for chunk in client.chat.completions.create(**kw, stream=True):
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
            for t in c.delta.tool_calls or []:
                slot = calls.setdefault(t.index, {"id": "", "name": "", "arguments": ""})
                slot["id"] += t.id or ""
                slot["name"] += (t.function and t.function.name) or ""
                slot["arguments"] += (t.function and t.function.arguments) or ""
    return finish, text, [calls[i] for i in sorted(calls)]


@pytest.mark.parametrize("model", ["gpt-test", "claude-test"])
@pytest.mark.parametrize("stream", [False, True])
def test_chat_tool_round_trip(client, proxy, model, stream):
    rid = f"py-openai-{uuid.uuid4().hex[:12]}"
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    finish, _, calls = _chat(client, rid + "-1", model, question, stream)
    assert finish == "tool_calls" and len(calls) == 1, calls
    assert calls[0]["name"] == "get_weather" and calls[0]["id"]
    assert isinstance(json.loads(calls[0]["arguments"]), dict)
    answered = question + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": calls[0]["id"], "type": "function",
             "function": {"name": "get_weather", "arguments": calls[0]["arguments"]}}]},
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": "sunny, 21C"},
    ]
    finish, text, calls = _chat(client, rid + "-2", model, answered, stream)
    assert (finish, calls) == ("stop", [])
    assert text
    for n in (1, 2):
        (row,) = rows_for(proxy, f"{rid}-{n}")
        assert (row["client"], row["endpoint"], row["status"]) == ("openai-python", "chat", 200)
        assert row["stream"] is stream
