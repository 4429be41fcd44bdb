"""The official OpenAI Python SDK against a running memproxy."""

import openai
import pytest


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
