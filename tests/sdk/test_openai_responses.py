"""The official OpenAI Python SDK's Responses API (`client.responses`) against memproxy.

`gpt-test` is an OpenAI-compatible deployment that serves /v1/responses natively (the
mock speaks it); `gpt-bridged` is the same upstream limited to chat completions by
`supported_endpoints`; `claude-test` is an Anthropic deployment. The fixed-mode mock
answers with a call of the first tool while the conversation has no tool output yet.
"""

import openai
import pytest

MODELS = ["gpt-test", "gpt-bridged", "claude-test"]
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@pytest.fixture()
def client(proxy):
    return openai.OpenAI(base_url=proxy["base"] + "/v1", api_key=proxy["key"], max_retries=0)


@pytest.mark.parametrize("model", MODELS)
def test_plain(client, model):
    r = client.responses.create(model=model, input="Say hello", instructions="Be brief.")
    assert r.object == "response"
    assert r.id.startswith("resp_")
    assert r.status == "completed"
    assert r.output_text
    assert r.output[-1].type == "message"
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0


@pytest.mark.parametrize("model", MODELS)
def test_streamed_events(client, model):
    stream = client.responses.create(model=model, input="Say hello", stream=True)
    types, text, final = [], "", None
    for event in stream:
        types.append(event.type)
        if event.type == "response.output_text.delta":
            text += event.delta
        if event.type == "response.completed":
            final = event.response
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    assert "response.output_item.added" in types and "response.output_item.done" in types
    assert text and final is not None
    assert final.output_text == text


@pytest.mark.parametrize("model", MODELS)
def test_stream_helper_accumulates_the_response(client, model):
    with client.responses.stream(model=model, input="Say hello") as stream:
        deltas = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert final.status == "completed"
    assert final.output_text == deltas != ""


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("stream", [False, True])
def test_function_tool_round_trip(client, model, stream):
    first_input = [{"role": "user", "content": "Weather in Paris?"}]
    if stream:
        with client.responses.stream(model=model, input=first_input, tools=[WEATHER]) as s:
            for _ in s:
                pass
            first = s.get_final_response()
    else:
        first = client.responses.create(model=model, input=first_input, tools=[WEATHER])
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1, first.output
    call = calls[0]
    assert call.name == "get_weather" and call.call_id

    second = client.responses.create(
        model=model,
        tools=[WEATHER],
        store=False,
        input=first_input
        + [
            {"type": "function_call", "call_id": call.call_id, "name": call.name,
             "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21C"},
        ],
    )
    assert second.status == "completed"
    assert second.output_text
    assert not [item for item in second.output if item.type == "function_call"]


@pytest.mark.parametrize("model", ["gpt-bridged", "claude-test"])
def test_previous_response_id_on_a_bridged_deployment(client, model):
    first = client.responses.create(model=model, input="My name is Ada.")
    second = client.responses.create(
        model=model, input="What is my name?", previous_response_id=first.id
    )
    assert second.previous_response_id == first.id
    assert second.output_text

    got = client.responses.retrieve(first.id)
    assert got.id == first.id and got.output_text == first.output_text
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model=model, input="again", previous_response_id=first.id)


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="no-such-model", input="hi")
