// The playground's shell: the API key, the page tabs (routed by the URL's #hash) and the served-model list.
import { render } from "preact";
import { useEffect, useErrorBoundary, useState } from "preact/hooks";
import { apiKey } from "./api.js";
import { Chat } from "./chat.js";
import { ErrorMessage, html, useModels } from "./common.js";
import { Compare } from "./compare.js";
import { RegistryPage } from "./registry.js";
import { RunList, RunPage } from "./runs.js";

// The server says whether it wants a key (a meta tag in the page); without one typed in, nothing is asked of the API.
const KEY_REQUIRED = document.querySelector('meta[name="llmforge-auth"]')?.content === "required";

const PAGES = [["chat", "Chat"], ["compare", "Compare"], ["runs", "Runs"], ["registry", "Registry & A/B"]];

function useHash() {
  const read = () => decodeURIComponent(location.hash.slice(1)) || "chat";
  const [hash, setHash] = useState(read());
  useEffect(() => {
    const on = () => setHash(read());
    addEventListener("hashchange", on);
    return () => removeEventListener("hashchange", on);
  }, []);
  return hash;
}

function KeyForm({ onSaved }) {
  const [value, setValue] = useState(apiKey.get());
  const save = (e) => { e.preventDefault(); apiKey.set(value.trim()); onSaved(); };
  return html`<form class="key" onSubmit=${save}>
    <label for="api-key">API key</label>
    <input id="api-key" type="password" autocomplete="off" value=${value}
           onInput=${(e) => setValue(e.currentTarget.value)} placeholder="the server's --api-key" />
    <button type="submit">Use key</button>
  </form>`;
}

function App() {
  // A bug in a page shows as a message with a way back, never as a blank page.
  const [crash, resetCrash] = useErrorBoundary();
  const hash = useHash();
  const [keyVersion, setKeyVersion] = useState(0);
  const needKey = KEY_REQUIRED && !apiKey.get();
  const { models, error, loading } = useModels(keyVersion, needKey);
  const page = hash.split("/")[0];
  const current = page === "run" ? "runs" : page;
  let body;
  if (page === "chat") body = html`<${Chat} models=${models} />`;
  else if (page === "compare") body = html`<${Compare} models=${models} />`;
  else if (page === "runs") body = html`<${RunList} key=${keyVersion} />`;
  else if (page === "run") body = html`<${RunPage} key=${`${keyVersion}:${hash}`} id=${hash.slice(4)} />`;
  else if (page === "registry") body = html`<${RegistryPage} key=${keyVersion} />`;
  else body = html`<p role="alert" class="error">No page '${hash}'. Pick one above.</p>`;
  if (crash) {
    body = html`<div><${ErrorMessage} error=${crash} />
      <button type="button" onClick=${resetCrash}>Back to the page</button></div>`;
  }
  return html`
    <header>
      <h1>llmforge playground</h1>
      <nav aria-label="pages"><ul>${PAGES.map(([id, label]) => html`<li key=${id}>
        <a href=${`#${id}`} aria-current=${current === id ? "page" : undefined}>${label}</a></li>`)}</ul></nav>
      <${KeyForm} onSaved=${() => setKeyVersion((v) => v + 1)} />
    </header>
    <main>
      ${needKey ? html`<p class="notice" role="status">This server needs its API key: type it above.</p>` : html`
      ${error && html`<${ErrorMessage} error=${error} />`}
      ${!loading && !error && models.length === 0 && html`<p class="error" role="alert">The server serves no model.</p>`}
      ${body}`}
    </main>`;
}

const root = document.getElementById("app");
root.textContent = ""; // the no-script notice
render(html`<${App} />`, root);
