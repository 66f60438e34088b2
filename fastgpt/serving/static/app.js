// The playground: POST /v1/completions with stream: true, read the SSE body with fetch +
// ReadableStream (EventSource cannot POST), and append each piece as it arrives.
"use strict";

const $ = (id) => document.getElementById(id);
let controller = null;   // AbortController of the request in flight: Stop aborts it

function numberField(id) {
  const text = $(id).value.trim();
  return text === "" ? undefined : Number(text);
}

function stopStrings() {
  const text = $("stop").value;
  if (!text) return undefined;
  // Comma-separated; \n and \t typed as two characters mean newline and tab.
  return text.split(",").filter((s) => s !== "")
    .map((s) => s.replace(/\\n/g, "\n").replace(/\\t/g, "\t"));
}

function requestBody() {
  const body = {
    prompt: $("prompt").value,
    max_tokens: numberField("max_tokens"),
    temperature: numberField("temperature"),
    top_p: numberField("top_p"),
    top_k: numberField("top_k"),
    seed: numberField("seed"),
    stop: stopStrings(),
    stream: true,
    stream_options: { include_usage: true },
  };
  if ($("colour").checked) body.logprobs = 0;
  return body;
}

function colourFor(logprob) {
  const p = Math.exp(logprob);                  // 0 -> red, 1 -> green
  return `hsla(${Math.round(120 * p)}, 75%, 60%, 0.45)`;
}

function showStats(start, first, tokens) {
  $("tokens").textContent = tokens;
  if (first === null) return;
  $("ttft").textContent = `${(first - start).toFixed(0)} ms`;
  const seconds = (performance.now() - first) / 1000;
  if (tokens > 1 && seconds > 0) $("rate").textContent = ((tokens - 1) / seconds).toFixed(1);
}

function appendText(text, logprob) {
  const span = document.createElement("span");
  span.textContent = text;
  if (logprob !== undefined && logprob !== null) {
    span.style.background = colourFor(logprob);
    span.title = `p = ${Math.exp(logprob).toFixed(3)}`;
  }
  $("completion").appendChild(span);
}

function setRunning(running, status) {
  $("generate").disabled = running;
  $("stop_button").disabled = !running;
  $("status").textContent = status;
}

async function generate(event) {
  event.preventDefault();
  const body = requestBody();
  $("prompt_echo").textContent = body.prompt;
  $("completion").textContent = "";
  $("legend").hidden = !$("colour").checked;
  for (const id of ["ttft", "rate"]) $(id).textContent = "–";
  $("tokens").textContent = "0";
  controller = new AbortController();
  setRunning(true, "generating…");
  const start = performance.now();
  let first = null, tokens = 0, status = "done";
  try {
    const response = await fetch("/v1/completions", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body), signal: controller.signal,
    });
    if (!response.ok) {
      const err = await response.json().catch(() => ({}));
      throw new Error((err.error && err.error.message) || `HTTP ${response.status}`);
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const line = buffer.slice(0, cut).trim();
        buffer = buffer.slice(cut + 2);
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        if (chunk.usage) { tokens = chunk.usage.completion_tokens; continue; }
        for (const choice of chunk.choices) {
          if (first === null) first = performance.now();
          const lp = choice.logprobs ? choice.logprobs.token_logprobs[0] : undefined;
          tokens += choice.logprobs ? choice.logprobs.tokens.length : 1;
          if (choice.text) appendText(choice.text, lp);
          if (choice.finish_reason) status = `done (${choice.finish_reason})`;
        }
        showStats(start, first, tokens);
      }
    }
  } catch (err) {
    if (err.name === "AbortError") {
      status = "stopped";
    } else {
      status = "error";
      const span = document.createElement("span");
      span.className = "error";
      span.textContent = `\n[${err.message}]`;
      $("completion").appendChild(span);
    }
  } finally {
    controller = null;
    showStats(start, first, tokens);
    setRunning(false, status);
  }
}

async function showModel() {
  try {
    const models = await (await fetch("/v1/models")).json();
    const card = models.data[0];
    $("model").textContent = `${card.id}` + (card.max_model_len ? ` · context ${card.max_model_len}` : "");
  } catch (err) {
    $("model").textContent = "server unreachable";
  }
}

$("form").addEventListener("submit", generate);
$("stop_button").addEventListener("click", () => { if (controller) controller.abort(); });
showModel();
