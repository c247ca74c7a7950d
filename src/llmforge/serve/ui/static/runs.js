// Runs: the run directories under the server's --ui-runs roots, and one run's numbers, plots and pages, read from
// the directory as it is (GET /ui/api/runs, /ui/api/run, /ui/api/file).
import { useEffect, useState } from "preact/hooks";
import { getBlobURL, getJSON, getText } from "./api.js";
import { ErrorMessage, html, show } from "./common.js";

const q = encodeURIComponent;

// Compression variants side by side: each compress run's own metrics.json (the list's headline numbers).
const COMPRESSION = [["size_bytes", "size (MB)", (v) => (v / 1e6).toFixed(2)], ["size_ratio", "size ratio", show],
  ["perplexity", "perplexity", show], ["perplexity_change", "Δ perplexity", (v) => `${(100 * v).toFixed(2)}%`],
  ["kl_divergence", "KL", show], ["top1_agreement", "top-1", (v) => `${(100 * v).toFixed(1)}%`],
  ["passed", "gate", (v) => (v ? "passed" : "failed")]];

function CompressionTable({ runs }) {
  const rows = runs.filter((r) => r.command === "compress" && r.id !== null);
  if (rows.length === 0) return null;
  return html`<table class="data"><caption>Compression (read from each variant's metrics.json)</caption>
    <thead><tr><th scope="col">variant</th>${COMPRESSION.map(([, label]) => html`<th scope="col">${label}</th>`)}
    </tr></thead>
    <tbody>${rows.map((r) => html`<tr key=${r.id}><td><a href=${`#run/${q(r.id)}`}>${r.name}</a></td>
      ${COMPRESSION.map(([k, , f]) => html`<td>${r.headline[k] === undefined ? "—" : f(r.headline[k])}</td>`)}
    </tr>`)}</tbody></table>`;
}

export function RunList() {
  const [state, setState] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => { getJSON("/ui/api/runs").then(setState).catch(setError); }, []);
  if (error) return html`<${ErrorMessage} error=${error} />`;
  if (!state) return html`<p>Loading runs…</p>`;
  return html`<section class="page runs" aria-labelledby="runs-title">
    <h2 id="runs-title">Runs</h2>
    <p class="hint">Run directories under ${state.roots.join(", ")} (serve --ui-runs DIR to add others).</p>
    ${state.runs.length === 0 ? html`<p>No run directories found.</p>` : html`<table class="data">
      <thead><tr><th scope="col">run</th><th scope="col">kind</th><th scope="col">finished</th>
        <th scope="col">command</th></tr></thead>
      <tbody>${state.runs.map((r) => html`<tr key=${r.path}>
        <td>${r.id !== null ? html`<a href=${`#run/${q(r.id)}`}>${r.name}</a>`
                            : html`${r.name} <span class="badge">unfinished</span>`}</td>
        <td>${r.kind || "—"}</td><td>${r.finished_at || "—"}</td><td class="mono">${r.command || ""}</td>
      </tr>`)}</tbody></table>`}
    <${CompressionTable} runs=${state.runs} />
  </section>`;
}

// A metrics object as tables: scalars as name/value rows; a list of records, or a map of records, as its own table.
function isRecord(v) { return v && typeof v === "object" && !Array.isArray(v); }
function scalar(v) { return v === null || typeof v !== "object"; }

function split(obj, prefix = "", out = { rows: [], tables: [], maps: [] }) {
  for (const [k, v] of Object.entries(obj || {})) {
    const name = prefix ? `${prefix}.${k}` : k;
    if (scalar(v)) out.rows.push([name, v]);
    else if (Array.isArray(v) && v.length && v.every(isRecord)) out.tables.push([name, v]);
    else if (Array.isArray(v)) out.rows.push([name, v.length > 12 ? `${v.length} values` : v]);
    else if (Object.values(v).length > 0 && Object.values(v).every(isRecord) && !Object.values(v).every(
      (x) => Object.values(x).every(isRecord))) out.maps.push([name, v]);
    else split(v, name, out);
  }
  return out;
}

function RecordTable({ name, records }) {
  const cols = [...new Set(records.flatMap((r) => Object.keys(r)))];
  return html`<table class="data"><caption>${name}</caption>
    <thead><tr>${cols.map((c) => html`<th scope="col">${c}</th>`)}</tr></thead>
    <tbody>${records.map((r, i) => html`<tr key=${i}>${cols.map((c) => html`<td>${show(r[c])}</td>`)}</tr>`)}</tbody>
  </table>`;
}

// A map of records (export formats, say) with one column per entry: the fields read down, formats across.
function MapTable({ name, map }) {
  const keys = Object.keys(map);
  const fields = [...new Set(keys.flatMap((k) => Object.keys(map[k])))];
  return html`<table class="data"><caption>${name}</caption>
    <thead><tr><th scope="col">field</th>${keys.map((k) => html`<th scope="col">${k}</th>`)}</tr></thead>
    <tbody>${fields.map((f) => html`<tr key=${f}><th scope="row">${f}</th>
      ${keys.map((k) => html`<td>${show(map[k][f])}</td>`)}</tr>`)}</tbody>
  </table>`;
}

function Numbers({ title, data }) {
  if (!data) return null;
  const { rows, tables, maps } = split(data);
  return html`<section class="numbers" aria-label=${title}><h3>${title}</h3>
    ${rows.length > 0 && html`<table class="data kv"><tbody>${rows.map(([k, v]) => html`<tr key=${k}>
      <th scope="row">${k}</th><td>${show(v)}</td></tr>`)}</tbody></table>`}
    ${tables.map(([name, records]) => html`<${RecordTable} key=${name} name=${name} records=${records} />`)}
    ${maps.map(([name, map]) => html`<${MapTable} key=${name} name=${name} map=${map} />`)}
  </section>`;
}

function Plot({ run, name }) {
  const [url, setUrl] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    let made = null;
    getBlobURL(`/ui/api/file?run=${q(run)}&name=${q(name)}`).then((u) => { made = u; setUrl(u); }).catch(setError);
    return () => made && URL.revokeObjectURL(made);
  }, [run, name]);
  return html`<figure class="plot">
    ${error ? html`<${ErrorMessage} error=${error} />` : url ? html`<img src=${url} alt=${`${name} of the run`} />`
                                                            : html`<p>Loading ${name}…</p>`}
    <figcaption>${name}</figcaption></figure>`;
}

// A page the run wrote (the bench report): in a sandboxed frame, so nothing in it runs.
function Page({ run, name }) {
  const [doc, setDoc] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => { getText(`/ui/api/file?run=${q(run)}&name=${q(name)}`).then(setDoc).catch(setError); },
    [run, name]);
  if (error) return html`<${ErrorMessage} error=${error} />`;
  if (doc === null) return html`<p>Loading ${name}…</p>`;
  return name.endsWith(".md") ? html`<details><summary>${name}</summary><pre>${doc}</pre></details>`
    : html`<iframe class="report" title=${name} sandbox="" srcdoc=${doc}></iframe>`;
}

export function RunPage({ id }) {
  const [run, setRun] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => { setRun(null); getJSON(`/ui/api/run?id=${q(id)}`).then(setRun).catch(setError); }, [id]);
  if (error) return html`<section class="page"><a href="#runs">← all runs</a><${ErrorMessage} error=${error} />
    </section>`;
  if (!run) return html`<p>Loading the run…</p>`;
  const reports = Object.entries(run.reports).filter(([n]) => !n.endsWith("loss_curve.json"));
  return html`<section class="page run" aria-labelledby="run-title">
    <a href="#runs">← all runs</a>
    <h2 id="run-title">${run.command || run.kind} run: ${run.path}</h2>
    <p class="mono">${run.command}</p>
    <p class="hint">finished ${run.finished_at}${run.cpu ? ` on ${run.cpu}` : ""}</p>
    ${run.images.length > 0 && html`<div class="plots">${run.images.map((n) => html`<${Plot} key=${n} run=${id}
                                                                                        name=${n} />`)}</div>`}
    <${Numbers} title="metrics.json" data=${run.metrics} />
    ${reports.map(([n, data]) => html`<${Numbers} key=${n} title=${n} data=${data} />`)}
    ${run.pages.map((n) => html`<${Page} key=${n} run=${id} name=${n} />`)}
    <details><summary>manifest.json</summary><pre>${JSON.stringify(run.manifest, null, 2)}</pre></details>
  </section>`;
}
