// One case of the Node SDK matrix against a running memproxy, run by
// tests/sdk/test_node_sdks.py: `node sdk_case.mjs <case>` with MEMPROXY_BASE,
// MEMPROXY_KEY, MODEL, STREAM (0|1) and REQUEST_ID (prefix of the x-request-id of each
// call) in the environment. Prints one JSON object: the SDK version, then the first call
// (the fixed-mode mock answers it with a call of the offered tool) and the second (the
// tool's result sent back, answered with text), as the SDK parsed them.
//
// Cases: openai-chat, openai-responses (openai-node), anthropic-messages
// (@anthropic-ai/sdk).

import { readFileSync } from 'node:fs';

import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';

/** The installed version of a package beside this script. */
const versionOf = (pkg) => JSON.parse(
  readFileSync(new URL(`./node_modules/${pkg}/package.json`, import.meta.url), 'utf8'),
).version;

const env = (name) => {
  const v = process.env[name];
  if (v === undefined) throw new Error(`${name} is not set`);
  return v;
};
const base = env('MEMPROXY_BASE');
const apiKey = env('MEMPROXY_KEY');
const model = env('MODEL');
const stream = env('STREAM') === '1';
const rid = env('REQUEST_ID');
const headers = (n) => ({ headers: { 'x-request-id': `${rid}-${n}` } });
const QUESTION = 'What is the weather in Paris?';
const PARAMS = {
  type: 'object',
  properties: { city: { type: 'string' } },
  required: ['city'],
};

async function openaiChat() {
  const client = new OpenAI({ baseURL: `${base}/v1`, apiKey, maxRetries: 0 });
  const tools = [
    { type: 'function', function: { name: 'get_weather', description: 'Weather', parameters: PARAMS } },
  ];
  const call = async (messages, n) => {
    const body = { model, messages, tools };
    if (!stream) {
      const r = await client.chat.completions.create(body, headers(n));
      const c = r.choices[0];
      return {
        finish: c.finish_reason,
        text: c.message.content ?? '',
        tool_calls: (c.message.tool_calls ?? []).map((t) => ({
          id: t.id, name: t.function.name, arguments: t.function.arguments,
        })),
        usage: r.usage,
      };
    }
    const s = await client.chat.completions.create(
      { ...body, stream: true, stream_options: { include_usage: true } }, headers(n));
    const out = { finish: null, text: '', tool_calls: [], usage: null, chunks: 0 };
    for await (const chunk of s) {
      out.chunks += 1;
      if (chunk.usage) out.usage = chunk.usage;
      for (const c of chunk.choices) {
        out.text += c.delta.content ?? '';
        for (const t of c.delta.tool_calls ?? []) {
          const slot = (out.tool_calls[t.index] ??= { id: '', name: '', arguments: '' });
          slot.id += t.id ?? '';
          slot.name += t.function?.name ?? '';
          slot.arguments += t.function?.arguments ?? '';
        }
        out.finish = c.finish_reason ?? out.finish;
      }
    }
    return out;
  };
  const messages = [{ role: 'user', content: QUESTION }];
  const first = await call(messages, 1);
  const tc = first.tool_calls[0];
  const second = await call([
    ...messages,
    { role: 'assistant', content: null, tool_calls: first.tool_calls.map((t) => ({
      id: t.id, type: 'function', function: { name: t.name, arguments: t.arguments },
    })) },
    { role: 'tool', tool_call_id: tc?.id ?? 'missing', content: 'sunny, 21C' },
  ], 2);
  return { first, second };
}

async function openaiResponses() {
  const client = new OpenAI({ baseURL: `${base}/v1`, apiKey, maxRetries: 0 });
  const tools = [{ type: 'function', name: 'get_weather', description: 'Weather', parameters: PARAMS }];
  const call = async (input, n) => {
    let r;
    let deltas = '';
    const events = [];
    if (stream) {
      const s = await client.responses.create({ model, input, tools, stream: true }, headers(n));
      for await (const e of s) {
        events.push(e.type);
        if (e.type === 'response.output_text.delta') deltas += e.delta;
        if (e.type === 'response.completed') r = e.response;
      }
    } else {
      r = await client.responses.create({ model, input, tools }, headers(n));
    }
    // `output_text` is the SDK's convenience on parsed responses; a streamed response
    // (from `response.completed`) has only its items.
    const text = (r?.output ?? []).filter((i) => i.type === 'message')
      .flatMap((i) => i.content).filter((c) => c.type === 'output_text').map((c) => c.text)
      .join('');
    return {
      status: r?.status,
      text,
      deltas,
      tool_calls: (r?.output ?? []).filter((i) => i.type === 'function_call')
        .map((i) => ({ id: i.call_id, name: i.name, arguments: i.arguments })),
      usage: r?.usage,
      events,
    };
  };
  const input = [{ role: 'user', content: QUESTION }];
  const first = await call(input, 1);
  const tc = first.tool_calls[0];
  const second = await call([
    ...input,
    { type: 'function_call', call_id: tc?.id ?? 'missing', name: tc?.name ?? 'get_weather',
      arguments: tc?.arguments ?? '{}' },
    { type: 'function_call_output', call_id: tc?.id ?? 'missing', output: 'sunny, 21C' },
  ], 2);
  return { first, second };
}

async function anthropicMessages() {
  const client = new Anthropic({ baseURL: base, apiKey, maxRetries: 0 });
  const tools = [{ name: 'get_weather', description: 'Weather', input_schema: PARAMS }];
  const call = async (messages, n) => {
    const body = { model, max_tokens: 256, messages, tools };
    let msg;
    const events = [];
    if (stream) {
      const s = client.messages.stream(body, headers(n));
      s.on('streamEvent', (e) => events.push(e.type));
      msg = await s.finalMessage();
    } else {
      msg = await client.messages.create(body, headers(n));
    }
    return {
      finish: msg.stop_reason,
      text: msg.content.filter((b) => b.type === 'text').map((b) => b.text).join(''),
      tool_calls: msg.content.filter((b) => b.type === 'tool_use')
        .map((b) => ({ id: b.id, name: b.name, arguments: JSON.stringify(b.input) })),
      content: msg.content,
      usage: msg.usage,
      events,
    };
  };
  const messages = [{ role: 'user', content: QUESTION }];
  const first = await call(messages, 1);
  const tc = first.tool_calls[0];
  const second = await call([
    ...messages,
    { role: 'assistant', content: first.content },
    { role: 'user', content: [
      { type: 'tool_result', tool_use_id: tc?.id ?? 'missing', content: 'sunny, 21C' },
    ] },
  ], 2);
  return { first, second };
}

const CASES = {
  'openai-chat': [openaiChat, 'openai'],
  'openai-responses': [openaiResponses, 'openai'],
  'anthropic-messages': [anthropicMessages, '@anthropic-ai/sdk'],
};

const name = process.argv[2];
const entry = CASES[name];
if (!entry) {
  console.error(`unknown case ${name}; one of ${Object.keys(CASES).join(', ')}`);
  process.exit(2);
}
const [run, pkg] = entry;
try {
  const result = await run();
  console.log(JSON.stringify({ case: name, model, stream, sdk: pkg, sdk_version: versionOf(pkg), ...result }));
} catch (e) {
  console.log(JSON.stringify({
    case: name, model, stream, error: String(e), status: e?.status ?? null, body: e?.error ?? null,
  }));
  process.exit(1);
}
