// vidchat playground: upload or link a video, sample its frames, ask, read answers as they
// stream. Talks to the playground's own API (vidchat/ui/app.py); every failure it reports
// is shown as a message on the page.
"use strict";

const $ = (id) => document.getElementById(id);
let info = null;      // /api/info
let source = null;    // {video: id, label} for an upload, {url, label} for a link
let sampled = null;   // {id, key}: the frames the questions go with
let busy = false;

// -- messages -------------------------------------------------------------------------------

function showMessage(text, kind = "error") {
  const box = $("message");
  box.textContent = text;
  box.className = kind;
  box.hidden = false;
}

function clearMessage() {
  $("message").hidden = true;
  $("message").textContent = "";
}

function describe(error) {
  return error.type ? `${error.type}: ${error.message}` : String(error.message || error);
}

// -- formatting -----------------------------------------------------------------------------

// "Frame at 0:01.5:" (the label the model reads, made by the client) -> "0:01.5"
const frameTime = (label) => label.replace(/^Frame at /, "").replace(/:$/, "");

function sizeOf(bytes) {
  if (bytes >= 1 << 20) return `${(bytes / (1 << 20)).toFixed(1)} MiB`;
  return `${Math.max(1, Math.round(bytes / 1024))} KiB`;
}

const secs = (s) => (s == null ? "–" : `${s.toFixed(2)} s`);

// -- the API --------------------------------------------------------------------------------

async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (e) {
    throw {type: "ConnectionError", message: "the playground does not answer: is `vidchat ui` " +
      "still running?"};
  }
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    throw (body && body.error) || {type: `HTTP ${response.status}`,
      message: response.statusText || "the playground refused the request"};
  }
  return body;
}

const postJSON = (path, data) => api(path, {
  method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(data)});

// -- the server -----------------------------------------------------------------------------

async function checkServer() {
  const status = $("server-status");
  status.className = "status";
  status.textContent = "Looking for the server…";
  try {
    info = await api("/api/info");
  } catch (e) {
    status.className = "status bad";
    status.textContent = describe(e);
    return;
  }
  if (info.error) {
    status.className = "status bad";
    status.textContent = `Server ${info.server} is unreachable: ${describe(info.error)}`;
  } else {
    status.className = "status ok";
    status.textContent = `${info.model} at ${info.server}: up to ${info.max_frames} frames ` +
      `a question (context ${info.max_model_len} tokens)`;
  }
}

// -- the video ------------------------------------------------------------------------------

async function uploadFile() {
  const file = $("file").files[0];
  if (!file) return;
  clearMessage();
  $("url").value = "";
  source = null;
  sampled = null;
  if (info && file.size > info.max_upload_bytes) {
    showMessage(`${file.name} is ${sizeOf(file.size)}: the playground takes up to ` +
      `${sizeOf(info.max_upload_bytes)}; upload a shorter clip`);
    return;
  }
  $("source").textContent = `Uploading ${file.name}…`;
  try {
    const up = await api(`/api/upload?name=${encodeURIComponent(file.name)}`, {
      method: "POST", headers: {"Content-Type": "application/octet-stream"}, body: file});
    source = {video: up.id, label: `${up.name} (uploaded, ${sizeOf(up.size)})`};
    $("source").textContent = source.label;
  } catch (e) {
    $("source").textContent = "No video yet.";
    showMessage(describe(e));
  }
}

function useURL() {
  const url = $("url").value.trim();
  if (!url) return;
  clearMessage();
  $("file").value = "";
  sampled = null;
  source = {url, label: `${url} (downloaded by the client when sampled)`};
  $("source").textContent = source.label;
}

// -- frames ---------------------------------------------------------------------------------

function samplingForm() {
  const form = {frames: $("frames").value, fps: $("fps").value, start: $("start").value,
    end: $("end").value, mode: $("mode").value};
  if (source && source.video) form.video = source.video; else if (source) form.url = source.url;
  return form;
}

function renderStrip(result) {
  const strip = $("strip");
  strip.replaceChildren();
  for (const thumb of result.thumbnails) {
    const figure = document.createElement("figure");
    figure.className = "frame";
    const img = document.createElement("img");
    img.src = thumb.src;
    img.alt = `frame ${thumb.index}, ${thumb.label}`;
    const caption = document.createElement("figcaption");
    caption.className = "time";
    caption.textContent = frameTime(thumb.label);
    caption.title = `${thumb.label} (${thumb.t.toFixed(3)} s, frame ${thumb.index} of the video)`;
    figure.append(img, caption);
    strip.append(figure);
  }
  $("strip-info").textContent = `${result.frames} frames of ${result.source} ` +
    `(${result.duration.toFixed(1)} s, ${result.backend}): sampled in ` +
    `${secs(result.sample_s)}, encoded in ${secs(result.encode_s)}; ` +
    `${sizeOf(result.bytes)} of JPEG, ${result.image_tokens} image tokens`;
}

async function sample() {
  clearMessage();
  if (!source) {
    showMessage("Choose a video first: upload a file or give an http(s) URL.");
    return false;
  }
  const form = samplingForm();
  $("strip-info").textContent = "Sampling…";
  try {
    const result = await postJSON("/api/sample", form);
    sampled = {id: result.id, key: JSON.stringify(form)};
    renderStrip(result);
    return true;
  } catch (e) {
    sampled = null;
    $("strip").replaceChildren();
    $("strip-info").textContent = "";
    showMessage(describe(e));
    return false;
  }
}

// -- questions and streamed answers ---------------------------------------------------------

function answerCard(index, question) {
  const card = document.createElement("article");
  card.className = "answer";
  card.dataset.q = index;
  const q = document.createElement("p");
  q.className = "question";
  q.textContent = question;
  const text = document.createElement("p");
  text.className = "answer-text";
  const stats = document.createElement("p");
  stats.className = "answer-stats muted";
  stats.textContent = "waiting…";
  card.append(q, text, stats);
  return card;
}

function statsLine(event) {
  const u = event.usage || {};
  const t = event.timings || {};
  const parts = [`${u.prompt_tokens ?? "?"} prompt + ${u.completion_tokens ?? "?"} ` +
    "completion tokens", `first token ${secs(t.first_token_s)}`, `total ${secs(t.total_s)}`];
  if (t.tokens_per_s) parts.push(`${t.tokens_per_s.toFixed(1)} tokens/s`);
  parts.push(event.bytes_sent ? `${sizeOf(event.bytes_sent)} of frames sent`
    : "frames from the server's cache");
  parts.push(`finish: ${event.finish_reason ?? "none"}`);
  return parts.join(" · ");
}

function onEvent(cards, name, data) {
  const card = data.q == null ? null : cards[data.q];
  if (name === "start" && card) {
    card.querySelector(".answer-stats").textContent = "asking…";
  } else if (name === "delta" && card) {
    card.querySelector(".answer-text").append(data.text);
    card.classList.add("streaming");
  } else if (name === "done" && card) {
    card.querySelector(".answer-stats").textContent = statsLine(data);
    card.classList.remove("streaming");
    card.classList.add("done");
    if (!["stop", "length"].includes(data.finish_reason)) card.classList.add("warn");
  } else if (name === "error") {
    if (!card) { showMessage(describe(data)); return; }
    const error = document.createElement("p");
    error.className = "answer-error error";
    error.textContent = describe(data);
    card.querySelector(".answer-stats").textContent = "";
    card.append(error);
    card.classList.remove("streaming");
    card.classList.add("failed");
  }
}

async function readEvents(response, cards) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, {stream: true});
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let name = "message";
      let data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      onEvent(cards, name, data ? JSON.parse(data) : {});
    }
  }
}

async function ask() {
  if (busy) return;
  busy = true;
  $("ask").disabled = true;
  try {
    const stale = !sampled || sampled.key !== JSON.stringify(samplingForm());
    if (stale && !(await sample())) return;
    clearMessage();
    const questions = $("questions").value.split("\n").map((q) => q.trim()).filter(Boolean);
    const answers = $("answers");
    answers.replaceChildren();
    const cards = questions.map((q, i) => answerCard(i, q));
    answers.append(...cards);
    let response;
    try {
      response = await fetch("/api/ask", {method: "POST",
        headers: {"Content-Type": "application/json"},
        body: JSON.stringify({sample: sampled.id, questions, timestamps: $("timestamps").checked,
          max_tokens: $("max-tokens").value, temperature: $("temperature").value})});
    } catch (e) {
      showMessage("ConnectionError: the playground does not answer: is `vidchat ui` running?");
      return;
    }
    if (!response.ok) {
      let body = null;
      try { body = await response.json(); } catch (e) { body = null; }
      answers.replaceChildren();
      showMessage(describe((body && body.error) || {type: `HTTP ${response.status}`,
        message: "the playground refused the questions"}));
      return;
    }
    try {
      await readEvents(response, cards);
    } catch (e) {
      showMessage(`The answer stream broke off: ${e.message || e}; ask again.`);
    }
  } finally {
    busy = false;
    $("ask").disabled = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("recheck").addEventListener("click", checkServer);
  $("file").addEventListener("change", uploadFile);
  $("url").addEventListener("change", useURL);
  $("sample").addEventListener("click", sample);
  $("ask").addEventListener("click", ask);
  checkServer();
});
