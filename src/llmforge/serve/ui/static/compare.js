// Compare: one prompt to two or more served models at once; each column streams with its own numbers, and greedy
// replies are diffed word by word against the first column where they diverge.
import { useRef, useState } from "preact/hooks";
import { streamChat } from "./api.js";
import { DEFAULT_SAMPLING, ErrorMessage, ReplyStats, SamplingControls, html, samplingFields } from "./common.js";

// jsdiff (vendor/diff.min.js, a classic script: window.Diff).
const wordDiff = (a, b) => window.Diff.diffWordsWithSpace(a, b);
// In a diff, whitespace is what differs as often as words: show it.
const visible = (s) => s.replace(/\r/g, "␍").replace(/\t/g, "→").replace(/\n/g, "↵\n");

function Divergence({ base, other, baseName, name }) {
  if (base === other) return html`<p class="same">Identical to ${baseName}.</p>`;
  const parts = wordDiff(base, other);
  let at = 0;
  for (const p of parts) {
    if (p.added || p.removed) break;
    at += p.value.length;
  }
  return html`<div class="diff" aria-label=${`diff of ${name} against ${baseName}`}>
    <p>Diverges from ${baseName} at character ${at}:</p>
    <p class="diff-text">${parts.map((p, i) => (p.added
      ? html`<ins key=${i} title=${`only in ${name}`}>${visible(p.value)}</ins>`
      : p.removed ? html`<del key=${i} title=${`only in ${baseName}`}>${visible(p.value)}</del>`
        : html`<span key=${i}>${visible(p.value)}</span>`))}</p>
  </div>`;
}

export function Compare({ models }) {
  const [picked, setPicked] = useState(null); // null: the first two (or all when fewer)
  const [system, setSystem] = useState("");
  const [prompt, setPrompt] = useState("");
  const [greedy, setGreedy] = useState(true);
  const [sampling, setSampling] = useState({ ...DEFAULT_SAMPLING, temperature: 0 });
  const [columns, setColumns] = useState([]); // {model, text, stats, error, streaming}
  const [error, setError] = useState(null);
  const aborts = useRef([]);
  const chosen = picked ?? models.slice(0, 2);
  const busy = columns.some((c) => c.streaming);

  const toggle = (m) => setPicked(chosen.includes(m) ? chosen.filter((x) => x !== m) : [...chosen, m]);

  async function run(e) {
    e.preventDefault();
    if (chosen.length < 2) { setError("Pick two or more models to compare."); return; }
    if (!prompt.trim()) return;
    setError(null);
    const messages = [...(system.trim() ? [{ role: "system", content: system }] : []),
                      { role: "user", content: prompt }];
    const fields = { ...samplingFields(sampling), ...(greedy ? { temperature: 0 } : {}) };
    setColumns(chosen.map((model) => ({ model, text: "", streaming: true })));
    aborts.current = chosen.map(() => new AbortController());
    const update = (i, more) => setColumns((cs) => cs.map((c, j) => (j === i ? { ...c, ...more } : c)));
    await Promise.all(chosen.map(async (model, i) => {
      try {
        const { text, stats } = await streamChat({ model, messages, ...fields }, {
          signal: aborts.current[i].signal, onText: (_, all) => update(i, { text: all }) });
        update(i, { text, stats, streaming: false });
      } catch (err) {
        update(i, { error: err, streaming: false });
      }
    }));
  }

  const done = columns.length > 1 && !busy;
  return html`<section class="page compare" aria-labelledby="compare-title">
    <h2 id="compare-title">Compare</h2>
    <form class="compare-form" onSubmit=${run}>
      <fieldset class="models">
        <legend>models (two or more)</legend>
        ${models.map((m) => html`<label class="check"><input type="checkbox" checked=${chosen.includes(m)}
                                   onChange=${() => toggle(m)} /> ${m}</label>`)}
      </fieldset>
      <label for="compare-system">system prompt</label>
      <textarea id="compare-system" rows="2" value=${system} onInput=${(e) => setSystem(e.currentTarget.value)}>
      </textarea>
      <label for="compare-prompt">prompt</label>
      <textarea id="compare-prompt" rows="3" value=${prompt} onInput=${(e) => setPrompt(e.currentTarget.value)}>
      </textarea>
      <label class="check"><input type="checkbox" checked=${greedy} onChange=${() => setGreedy(!greedy)} />
        greedy (temperature 0: replies differ only where the models do)</label>
      <details><summary>sampling</summary>
        <${SamplingControls} value=${sampling} onChange=${setSampling} idPrefix="compare" /></details>
      <div class="buttons">
        <button type="submit" class="primary" disabled=${busy}>Compare</button>
        <button type="button" disabled=${!busy} onClick=${() => aborts.current.forEach((a) => a.abort())}>
          Stop</button>
      </div>
    </form>
    <${ErrorMessage} error=${error} />
    <div class="compare-columns">
      ${columns.map((c, i) => html`<article class="column" key=${c.model} aria-label=${`reply of ${c.model}`}>
        <h3>${c.model}</h3>
        <${ErrorMessage} error=${c.error} />
        <div class="text" data-streaming=${c.streaming ? "true" : "false"}>${c.text}</div>
        <${ReplyStats} stats=${c.stats} />
        ${done && i > 0 && greedy && !c.error && !columns[0].error && html`<${Divergence}
          base=${columns[0].text} other=${c.text} baseName=${columns[0].model} name=${c.model} />`}
      </article>`)}
    </div>
  </section>`;
}
