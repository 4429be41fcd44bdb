"""The official OpenAI Python SDK against an `anthropic/` model: memproxy translates the
request to Anthropic Messages and the answer (JSON and SSE events) back."""

import openai
import pytest


@pytest.fixture()
def client(proxy):
    return openai.OpenAI(base_url=proxy["base"] + "/v1", api_key=proxy["key"], max_retries=0)


def test_chat_completion_via_anthropic(client):
    r = client.chat.completions.create(
        model="claude-test",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello"},
        ],
    )
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0


def test_streaming_chat_via_anthropic(client):
    stream = client.chat.completions.create(
        model="claude-test",
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
