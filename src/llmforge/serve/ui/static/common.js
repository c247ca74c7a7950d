// What every page shares: the html tag, error messages, reply numbers, sampling controls and the model list.
import { h } from "preact";
import { useEffect, useState } from "preact/hooks";
import htm from "htm";
import { ApiError, getJSON } from "./api.js";

export const html = htm.bind(h);

export function describe(err) {
  if (typeof err === "string") return err; // a message for the user (what to fix in the form)
  if (err instanceof ApiError) return err.describe();
  return `Something went wrong in the page: ${err?.message || err}`;
}

export function ErrorMessage({ error }) {
  if (!error) return null;
  return html`<div class="error" role="alert">${describe(error)}</div>`;
}

const fmt = (x, digits = 0) => (x === null || x === undefined ? "—" : Number(x).toFixed(digits));

export function ReplyStats({ stats }) {
  if (!stats) return null;
  return html`<dl class="stats" aria-label="reply numbers">
    <div><dt>TTFT</dt><dd data-stat="ttft">${fmt(stats.ttft_ms)} ms</dd></div>
    <div><dt>decode</dt><dd data-stat="tps">${fmt(stats.tokens_per_s, 1)} tok/s</dd></div>
    <div><dt>prompt</dt><dd data-stat="prompt">${fmt(stats.prompt_tokens)} tok</dd></div>
    <div><dt>reply</dt><dd data-stat="completion">${fmt(stats.completion_tokens)} tok</dd></div>
    <div><dt>total</dt><dd>${fmt(stats.total_ms)} ms</dd></div>
    <div><dt>ended</dt><dd data-stat="finish">${stats.finish_reason || "—"}</dd></div>
  </dl>`;
}

// The served models (/v1/models), loaded once per page; `error` when the list cannot be had (a wrong key).
export function useModels(keyVersion, skip) {
  const [state, setState] = useState({ models: [], error: null, loading: true });
  useEffect(() => {
    let live = true;
    if (skip) return undefined;
    getJSON("/v1/models")
      .then((r) => live && setState({ models: r.data.map((m) => m.id), error: null, loading: false }))
      .catch((error) => live && setState({ models: [], error, loading: false }));
    return () => { live = false; };
  }, [keyVersion, skip]);
  return state;
}

export const DEFAULT_SAMPLING = { temperature: 0.7, top_p: 1, max_tokens: 128, stop: "", seed: "" };

// The request fields the sampling controls stand for (empty fields are left out: the server's defaults apply).
export function samplingFields(s) {
  const body = { temperature: Number(s.temperature), top_p: Number(s.top_p) };
  if (s.max_tokens !== "") body.max_tokens = Number(s.max_tokens);
  const stops = s.stop.split("\n").filter((x) => x !== "");
  if (stops.length) body.stop = stops;
  if (s.seed !== "") body.seed = Number(s.seed);
  return body;
}

export function SamplingControls({ value, onChange, idPrefix }) {
  const set = (k) => (e) => onChange({ ...value, [k]: e.currentTarget.value });
  const id = (k) => `${idPrefix}-${k}`;
  return html`<fieldset class="sampling">
    <legend>Sampling</legend>
    <label for=${id("temperature")}>temperature <output>${Number(value.temperature).toFixed(2)}</output></label>
    <input id=${id("temperature")} type="range" min="0" max="2" step="0.05" value=${value.temperature}
           onInput=${set("temperature")} />
    <label for=${id("top_p")}>top_p <output>${Number(value.top_p).toFixed(2)}</output></label>
    <input id=${id("top_p")} type="range" min="0.05" max="1" step="0.05" value=${value.top_p}
           onInput=${set("top_p")} />
    <label for=${id("max_tokens")}>max tokens</label>
    <input id=${id("max_tokens")} type="number" min="1" step="1" value=${value.max_tokens}
           onInput=${set("max_tokens")} />
    <label for=${id("seed")}>seed (empty: none)</label>
    <input id=${id("seed")} type="number" step="1" value=${value.seed} onInput=${set("seed")} />
    <label for=${id("stop")}>stop strings (one a line, up to 4)</label>
    <textarea id=${id("stop")} rows="2" value=${value.stop} onInput=${set("stop")}></textarea>
  </fieldset>`;
}

// A value of a run's metrics as text: numbers rounded for reading, the rest as JSON.
export function show(v) {
  if (v === null || v === undefined) return "—";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toPrecision(5);
  if (typeof v === "object") {
    const text = JSON.stringify(v);
    return text.length > 160 ? `${text.slice(0, 157)}…` : text;
  }
  return String(v);
}
