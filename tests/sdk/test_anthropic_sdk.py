"""The official Anthropic Python SDK against a running memproxy's /v1/messages.

`claude-test` is an Anthropic deployment on the compiled mock upstream; `gpt-test` an
OpenAI-compatible one, so the same SDK calls also exercise translation.
"""

import uuid

import anthropic
import pytest
from conftest import rows_for

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@pytest.fixture()
def client(proxy):
    return anthropic.Anthropic(base_url=proxy["base"], api_key=proxy["key"], max_retries=0)


@pytest.mark.parametrize("model", ["claude-test", "gpt-test", "offline"])
def test_plain_message(client, model):
    msg = client.messages.create(
        model=model,
        max_tokens=64,
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": "Say hello"}],
    )
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.content[0].type == "text" and msg.content[0].text
    assert msg.stop_reason == "end_turn"
    assert msg.usage.output_tokens > 0


@pytest.mark.parametrize("model", ["claude-test", "gpt-test"])
def test_streamed_message(client, model):
    with client.messages.stream(
        model=model,
        max_tokens=64,
        messages=[{"role": "user", "content": "Say hello"}],
        metadata={"user_id": "sdk-user"},
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text
    assert final.content[0].text == text
    assert final.stop_reason == "end_turn"


@pytest.mark.parametrize("model", ["claude-test", "gpt-test"])
def test_tool_round_trip(client, proxy, model):
    rid = f"py-anthropic-{uuid.uuid4().hex[:12]}"
    first = client.messages.create(
        model=model,
        max_tokens=128,
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        extra_headers={"x-request-id": rid},
    )
    assert first.stop_reason == "tool_use"
    use = next(b for b in first.content if b.type == "tool_use")
    assert use.name == "get_weather"
    assert isinstance(use.input, dict)

    second = client.messages.create(
        model=model,
        max_tokens=128,
        tools=[WEATHER_TOOL],
        messages=[
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}],
            },
        ],
    )
    assert second.stop_reason == "end_turn"
    assert second.content[0].text
    (row,) = rows_for(proxy, rid)
    assert (row["client"], row["endpoint"], row["model"]) == ("anthropic-python", "messages", model)


def test_streamed_tool_call(client):
    with client.messages.stream(
        model="claude-test",
        max_tokens=128,
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert any(b.type == "tool_use" and b.name == "get_weather" for b in final.content)


def test_count_tokens(client):
    r = client.messages.count_tokens(
        model="claude-test", messages=[{"role": "user", "content": "Hello there"}]
    )
    assert r.input_tokens > 0


def test_errors_have_anthropic_shape(client, proxy):
    with pytest.raises(anthropic.NotFoundError) as e:
        client.messages.create(
            model="no-such-model", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        )
    assert e.value.body["type"] == "error"
    assert "no-such-model" in e.value.body["error"]["message"]
    bad = anthropic.Anthropic(base_url=proxy["base"], api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        bad.messages.create(model="claude-test", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
