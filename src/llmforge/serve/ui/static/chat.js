// Chat: one model, a system prompt, the sampling controls; replies stream in with their numbers.
import { useRef, useState } from "preact/hooks";
import { renderedPrompt, streamChat } from "./api.js";
import { DEFAULT_SAMPLING, ErrorMessage, ReplyStats, SamplingControls, html, samplingFields } from "./common.js";

export function Chat({ models }) {
  const [model, setModel] = useState("");
  const [system, setSystem] = useState("");
  const [sampling, setSampling] = useState(DEFAULT_SAMPLING);
  const [turns, setTurns] = useState([]); // {role, content, stats?}
  const [input, setInput] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const [prompt, setPrompt] = useState(null); // {text, count, max_model_len} or null
  const abort = useRef(null);
  const chosen = model || models[0] || "";

  const conversation = (next) => [
    ...(system.trim() ? [{ role: "system", content: system }] : []),
    ...turns.filter((t) => !t.failed).map(({ role, content }) => ({ role, content })),  // a stopped reply stays
    ...(next ? [{ role: "user", content: next }] : []),
  ];

  async function send(e) {
    e.preventDefault();
    if (!input.trim() || busy || !chosen) return;
    const messages = conversation(input);
    const user = { role: "user", content: input };
    setTurns((t) => [...t, user, { role: "assistant", content: "", streaming: true }]);
    setInput("");
    setError(null);
    setBusy(true);
    abort.current = new AbortController();
    const update = (fields) => setTurns((t) => [...t.slice(0, -1), { ...t[t.length - 1], ...fields }]);
    try {
      const { text, stats } = await streamChat({ model: chosen, messages, ...samplingFields(sampling) },
        { signal: abort.current.signal, onText: (_, all) => update({ content: all }) });
      update({ content: text, stats, streaming: false });
    } catch (err) {
      update({ streaming: false, failed: true });
      setError(err);
    } finally {
      setBusy(false);
      abort.current = null;
    }
  }

  async function showPrompt() {
    setError(null);
    try {
      setPrompt(await renderedPrompt(chosen, conversation(input.trim() ? input : null)));
    } catch (err) {
      setError(err);
    }
  }

  const onKey = (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) send(e); };

  return html`<section class="page chat" aria-labelledby="chat-title">
    <h2 id="chat-title">Chat</h2>
    <div class="columns">
      <aside class="controls">
        <label for="chat-model">model</label>
        <select id="chat-model" value=${chosen} onChange=${(e) => setModel(e.currentTarget.value)}>
          ${models.map((m) => html`<option value=${m}>${m}</option>`)}
        </select>
        <label for="chat-system">system prompt</label>
        <textarea id="chat-system" rows="3" value=${system} onInput=${(e) => setSystem(e.currentTarget.value)}
                  placeholder="You are a helpful assistant."></textarea>
        <${SamplingControls} value=${sampling} onChange=${setSampling} idPrefix="chat" />
        <button type="button" onClick=${showPrompt} disabled=${!chosen}>Show rendered prompt</button>
        <button type="button" onClick=${() => { setTurns([]); setPrompt(null); }} disabled=${busy}>
          Clear conversation</button>
      </aside>
      <div class="conversation">
        <${ErrorMessage} error=${error} />
        <ol class="turns" aria-live="polite">
          ${turns.map((t, i) => html`<li class=${`turn ${t.role}${t.failed ? " failed" : ""}`} key=${i}>
            <span class="role">${t.role}</span>
            <div class="text" data-streaming=${t.streaming ? "true" : "false"}>${t.content}</div>
            ${t.stats && html`<${ReplyStats} stats=${t.stats} />`}
          </li>`)}
        </ol>
        <form class="composer" onSubmit=${send}>
          <label for="chat-input">message (Ctrl+Enter sends)</label>
          <textarea id="chat-input" rows="3" value=${input} onInput=${(e) => setInput(e.currentTarget.value)}
                    onKeyDown=${onKey}></textarea>
          <div class="buttons">
            <button type="submit" class="primary" disabled=${busy || !chosen}>Send</button>
            <button type="button" onClick=${() => abort.current?.abort()} disabled=${!busy}>Stop</button>
          </div>
        </form>
        ${prompt && html`<section class="rendered" aria-labelledby="rendered-title">
          <h3 id="rendered-title">Rendered prompt: ${prompt.count} tokens of ${prompt.max_model_len}</h3>
          <pre>${prompt.text}</pre>
          <button type="button" onClick=${() => setPrompt(null)}>Hide</button>
        </section>`}
      </div>
    </div>
  </section>`;
}
