// The playground's only way to the model: this server's own HTTP API, with the key the user typed in.
// Every failure becomes an ApiError carrying the server's own message (OpenAI's error body), so pages can show it.

const KEY = "llmforge.apiKey";

export const apiKey = {
  get: () => sessionStorage.getItem(KEY) || "",
  set: (value) => (value ? sessionStorage.setItem(KEY, value) : sessionStorage.removeItem(KEY)),
};

export class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
  describe() {
    const what = this.status === 401 ? "The API key was refused (HTTP 401)" : `The server answered HTTP ${this.status}`;
    return this.status ? `${what}: ${this.message}` : this.message;
  }
}

function headers(extra = {}) {
  const key = apiKey.get();
  return { ...(key ? { Authorization: `Bearer ${key}` } : {}), ...extra };
}

async function failure(response) {
  let message = response.statusText || "request failed", code;
  try {
    const body = await response.json();
    message = body?.error?.message || body?.detail || message;
    code = body?.error?.code;
  } catch (_) { /* not JSON: keep the status text */ }
  return new ApiError(response.status, message, code);
}

async function send(path, init = {}) {
  let response;
  try {
    response = await fetch(path, { ...init, headers: headers(init.headers) });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, `The server could not be reached (${err.message}).`);
  }
  if (!response.ok) throw await failure(response);
  return response;
}

export async function getJSON(path) {
  return (await send(path)).json();
}

export async function postJSON(path, body) {
  return (await send(path, { method: "POST", headers: { "Content-Type": "application/json" },
                             body: JSON.stringify(body) })).json();
}

export async function getBlobURL(path) {
  return URL.createObjectURL(await (await send(path)).blob());
}

export async function getText(path) {
  return (await send(path)).text();
}

// Stream a chat completion. `onText(delta)` hears each piece of text as it arrives. Resolves with the reply's
// numbers: TTFT (request sent -> first text), decode rate (tokens after the first / time after the first),
// token counts from the server's usage chunk, and how the reply ended ("stopped" when `signal` aborted it).
export async function streamChat(body, { signal, onText }) {
  const started = performance.now();
  const stats = { ttft_ms: null, total_ms: null, prompt_tokens: null, completion_tokens: null,
                  tokens_per_s: null, finish_reason: null, chunks: 0 };
  let firstAt = null, text = "";
  const response = await send("/v1/chat/completions", {
    method: "POST", signal, headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }),
  });
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data: ")) continue;
          const data = line.slice(6);
          if (data === "[DONE]") continue;
          const chunk = JSON.parse(data);
          if (chunk.error) throw new ApiError(chunk.error.code === "timeout" ? 504 : 500, chunk.error.message);
          if (chunk.usage) {
            stats.prompt_tokens = chunk.usage.prompt_tokens;
            stats.completion_tokens = chunk.usage.completion_tokens;
          }
          for (const choice of chunk.choices || []) {
            const delta = choice.delta?.content;
            if (delta) {
              if (firstAt === null) firstAt = performance.now();
              stats.chunks += 1;
              text += delta;
              onText(delta, text);
            }
            if (choice.finish_reason) stats.finish_reason = choice.finish_reason;
          }
        }
      }
    }
  } catch (err) {
    if (err.name !== "AbortError") throw err;
    stats.finish_reason = "stopped";
  }
  const ended = performance.now();
  stats.total_ms = ended - started;
  if (firstAt !== null) {
    stats.ttft_ms = firstAt - started;
    const after = (stats.completion_tokens ?? stats.chunks) - 1;
    if (after > 0 && ended > firstAt) stats.tokens_per_s = (1000 * after) / (ended - firstAt);
  }
  return { text, stats };
}

// The prompt the model's chat template makes of `messages`: /tokenize renders and counts it, /detokenize shows
// it as text (special tokens included), both exactly as a chat request is built.
export async function renderedPrompt(model, messages) {
  const tokens = await postJSON("/tokenize", { model, messages, add_generation_prompt: true });
  const text = await postJSON("/detokenize", { model, tokens: tokens.tokens });
  return { text: text.prompt, count: tokens.count, max_model_len: tokens.max_model_len };
}

// Prometheus text -> [{name, labels, value}] (the server's /metrics; only what the A/B page reads).
export function parseMetrics(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    for (const [, k, v] of (m[2] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[k] = v;
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}
