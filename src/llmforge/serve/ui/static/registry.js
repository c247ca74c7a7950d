// Registry and A/B: registered versions and where `production` points (GET /ui/api/registry), this server's A/B
// splits (GET /ui/api/overview) and each variant's live numbers from the server's own /metrics.
import { useEffect, useState } from "preact/hooks";
import { getJSON, getText, parseMetrics } from "./api.js";
import { ErrorMessage, html, show } from "./common.js";

function Registry({ reg }) {
  if (!reg.available) return html`<p class="hint">${reg.message}</p>`;
  if (reg.models.length === 0) {
    return html`<p class="hint">No registered models in ${reg.uri}
      (llmforge registry register RUN_DIR --name NAME).</p>`;
  }
  return reg.models.map((m) => html`<section key=${m.name} aria-label=${`registered model ${m.name}`}>
    <h3>${m.name}</h3>
    <table class="data">
      <thead><tr><th scope="col">version</th><th scope="col">aliases</th><th scope="col">kind</th>
        <th scope="col">run dir</th><th scope="col">registered</th></tr></thead>
      <tbody>${m.versions.map((v) => html`<tr key=${v.version}
          class=${v.aliases.includes("production") ? "production" : ""}>
        <td>${v.version}</td><td>${v.aliases.join(", ") || "—"}</td><td>${v.kind || "—"}</td>
        <td class="mono">${v.run_dir}</td><td>${v.registered_at} by ${v.registered_by}</td></tr>`)}</tbody>
    </table>
    ${m.decisions.length > 0 && html`<details><summary>decisions (${m.decisions.length})</summary>
      <ol>${m.decisions.map((d, i) => html`<li key=${i}>${d.at}: ${d.action} ${d.alias || ""} v${d.version}
        ${d.previous !== null ? ` (was v${d.previous})` : ""} by ${d.by}${d.reason ? `: ${d.reason}` : ""}</li>`)}
      </ol></details>`}
  </section>`);
}

// Per (model, variant): requests, generated tokens, mean end-to-end latency and TTFT, from /metrics.
function variantNumbers(samples) {
  const out = {};
  const at = (s) => (out[`${s.labels.model_name}\u0000${s.labels.variant || ""}`] ??= {});
  for (const s of samples) {
    const v = at(s);
    if (s.name === "vllm:request_success_total") v.requests = (v.requests || 0) + s.value;
    else if (s.name === "vllm:generation_tokens_total") v.tokens = s.value;
    else if (s.name === "vllm:e2e_request_latency_seconds_sum") v.e2e_sum = s.value;
    else if (s.name === "vllm:e2e_request_latency_seconds_count") v.e2e_n = s.value;
    else if (s.name === "vllm:time_to_first_token_seconds_sum") v.ttft_sum = s.value;
    else if (s.name === "vllm:time_to_first_token_seconds_count") v.ttft_n = s.value;
  }
  return out;
}

function Splits({ ab, numbers, summary }) {
  const names = Object.keys(ab);
  if (names.length === 0) {
    return html`<p class="hint">This server serves no A/B split (serve --ab NAME=VARIANT:WEIGHT:REF,...).</p>`;
  }
  const logged = Object.fromEntries((summary || []).filter((s) => s.variant)
    .map((s) => [`${s.model}\u0000${s.variant}`, s]));
  return names.map((name) => {
    const variants = Object.entries(ab[name].variants);
    const total = variants.reduce((a, [, v]) => a + v.weight, 0);
    return html`<section key=${name} aria-label=${`A/B split of ${name}`}>
      <h3>${name}${ab[name].shadow ? html` <span class="badge">shadow: ${ab[name].shadow}</span>` : ""}</h3>
      <table class="data">
        <thead><tr><th scope="col">variant</th><th scope="col">model</th><th scope="col">traffic</th>
          <th scope="col">requests</th><th scope="col">tokens</th><th scope="col">mean latency</th>
          <th scope="col">mean TTFT</th><th scope="col">errors (log)</th><th scope="col">feedback (log)</th></tr></thead>
        <tbody>${variants.map(([variant, v]) => {
          const n = numbers[`${name}\u0000${variant}`] || {};
          const l = logged[`${name}\u0000${variant}`];
          return html`<tr key=${variant}><td>${variant}</td><td class="mono">${v.model}</td>
            <td>${((100 * v.weight) / total).toFixed(1)}%</td><td>${show(n.requests ?? 0)}</td>
            <td>${show(n.tokens ?? 0)}</td>
            <td>${n.e2e_n ? `${((1000 * n.e2e_sum) / n.e2e_n).toFixed(0)} ms` : "—"}</td>
            <td>${n.ttft_n ? `${((1000 * n.ttft_sum) / n.ttft_n).toFixed(0)} ms` : "—"}</td>
            <td>${l ? `${l.errors} of ${l.requests}` : "—"}</td>
            <td>${l && l.mean_score !== null ? `${l.mean_score.toFixed(2)} (${l.feedback})` : "—"}</td></tr>`;
        })}</tbody>
      </table></section>`;
  });
}

export function RegistryPage() {
  const [state, setState] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    Promise.all([getJSON("/ui/api/registry"), getJSON("/ui/api/overview"), getText("/metrics")])
      .then(([reg, overview, metrics]) => setState({ reg, overview, numbers: variantNumbers(parseMetrics(metrics)) }))
      .catch(setError);
  }, []);
  if (error) return html`<${ErrorMessage} error=${error} />`;
  if (!state) return html`<p>Loading the registry…</p>`;
  const { reg, overview, numbers } = state;
  return html`<section class="page registry" aria-labelledby="registry-title">
    <h2 id="registry-title">Registry</h2>
    <${Registry} reg=${reg} />
    <h2>A/B on this server</h2>
    <${Splits} ab=${overview.ab} numbers=${numbers} summary=${overview.ab_summary} />
    ${!overview.event_log && Object.keys(overview.ab).length > 0
      && html`<p class="hint">Errors and feedback per variant need the event log (serve --event-log DIR).</p>`}
  </section>`;
}
