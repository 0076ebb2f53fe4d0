// sgld playground: a thin client of the server's own public API (/v1/videos, /v1/images/*).
"use strict";

const $ = (id) => document.getElementById(id);
let info = null;
const imageHistory = [];

function authHeaders(extra = {}) {
  const key = $("api-key").value.trim();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: authHeaders(options.headers || {}) });
  if (!response.ok) {
    let message = `HTTP ${response.status}`;
    try {
      const body = await response.json();
      message = (body.error && body.error.message) || body.detail || message;
    } catch (_) { /* not JSON: keep the status line */ }
    throw new Error(message);
  }
  return response;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function setValue(id, value) {
  if (value !== null && value !== undefined) $(id).value = value;
}

function number(id) {
  const raw = $(id).value.trim();
  return raw === "" ? undefined : Number(raw);
}

function setStatus(text, progress) {
  $("status").textContent = text;
  const bar = $("progress");
  bar.hidden = progress === undefined;
  if (progress === null) bar.removeAttribute("value");  // indeterminate: images have no step progress
  else if (progress !== undefined) bar.value = progress;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
  setStatus("Failed.", undefined);
}

function commonFields() {
  const fields = {
    prompt: $("prompt").value,
    negative_prompt: $("negative-prompt").value || undefined,
    num_inference_steps: number("steps"),
    seed: number("seed"),
    guidance_scale: number("guidance"),
  };
  const width = number("width"), height = number("height");
  if (width !== undefined && height !== undefined) fields.size = `${width}x${height}`;
  if (info.loras && $("lora").value) fields.loras = [{ name: $("lora").value, scale: number("lora-scale") ?? 1 }];
  return fields;
}

function appendFields(form, fields) {
  // Forms carry lists (the LoRA adapters) as JSON text; the server reads it back.
  for (const [key, value] of Object.entries(fields)) {
    if (value !== undefined) form.append(key, typeof value === "object" ? JSON.stringify(value) : value);
  }
}

function showMedia(kind, url, name) {
  const output = $("output");
  output.replaceChildren();
  const media = document.createElement(kind === "video" ? "video" : "img");
  media.src = url;
  if (kind === "video") { media.controls = true; media.setAttribute("aria-label", "Generated video"); }
  else media.alt = "Generated image";
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  link.textContent = `Download ${name}`;
  output.append(media, link);
}

async function showVideo(id) {
  const blob = await (await api(`/v1/videos/${id}/content`)).blob();
  showMedia("video", URL.createObjectURL(blob), `${id}.mp4`);
}

async function createVideo() {
  const body = { ...commonFields(), num_frames: number("num-frames") };
  const file = info.takes_image ? $("image").files[0] : undefined;
  if (info.needs_image && !file) throw new Error("Choose the first frame: this model makes video from an image.");
  if (!file) {
    return api("/v1/videos", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
  }
  const form = new FormData();
  appendFields(form, body);
  form.append("input_reference", file);
  return api("/v1/videos", { method: "POST", body: form });
}

async function runVideo() {
  let video = await (await createVideo()).json();
  loadHistory();
  while (video.status !== "completed" && video.status !== "failed") {
    setStatus(`${video.status === "queued" ? "Queued" : "Generating"}… ${video.progress}%`, video.progress);
    await sleep(400);
    video = await (await api(`/v1/videos/${video.id}`)).json();
  }
  if (video.status === "failed") throw new Error(video.error ? video.error.message : "generation failed");
  setStatus(`Done: ${video.id}`, 100);
  await showVideo(video.id);
  loadHistory();
}

async function runImage() {
  setStatus("Generating…", null);
  let response;
  const files = info.takes_image ? [...$("image").files] : [];
  if (info.needs_image || files.length) {  // an edit, or reference images (FLUX.2)
    if (!files.length) throw new Error("Choose an input image to edit.");
    if (files.length > info.max_input_images) {
      throw new Error(`Choose at most ${info.max_input_images} images: this model takes no more.`);
    }
    const form = new FormData();
    appendFields(form, commonFields());
    for (const file of files) form.append(files.length > 1 ? "image[]" : "image", file);
    form.append("response_format", "b64_json");
    form.append("output_format", "png");  // lossless in the page (the API's default is jpeg, as SGLang's)
    response = await api("/v1/images/edits", { method: "POST", body: form });
  } else {
    const body = { ...commonFields(), n: 1, response_format: "b64_json", output_format: "png" };
    response = await api("/v1/images/generations", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
  }
  const result = await response.json();
  const url = `data:image/png;base64,${result.data[0].b64_json}`;
  setStatus("Done.", 100);
  showMedia("image", url, "image.png");
  imageHistory.unshift({ url, prompt: $("prompt").value });
  renderImageHistory();
}

function historyItem(prompt, status, thumbnailUrl, onShow) {
  const item = document.createElement("li");
  const img = document.createElement("img");
  img.alt = `Thumbnail: ${prompt}`;
  if (thumbnailUrl) img.src = thumbnailUrl;
  const text = document.createElement("div");
  text.textContent = prompt.length > 60 ? `${prompt.slice(0, 57)}…` : prompt;
  const state = document.createElement("div");
  state.className = "muted";
  state.textContent = status;
  item.append(img, text, state);
  if (onShow) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "Show";
    button.addEventListener("click", onShow);
    item.append(button);
  }
  return item;
}

async function loadHistory() {
  if (!info || info.kind !== "video") return;
  try {
    const list = await (await api("/v1/videos?limit=12&order=desc")).json();
    const items = await Promise.all(list.data.map(async (video) => {
      let thumb = null;
      if (video.status === "completed") {
        try { thumb = URL.createObjectURL(await (await api(`/v1/videos/${video.id}/content?variant=thumbnail`)).blob()); }
        catch (_) { /* no thumbnail: show the text only */ }
      }
      const show = video.status === "completed" ? () => showVideo(video.id) : null;
      return historyItem(video.prompt, video.status, thumb, show);
    }));
    $("history").replaceChildren(...items);
  } catch (error) {
    $("history").replaceChildren(historyItem("History unavailable", error.message, null, null));
  }
}

function renderImageHistory() {
  $("history").replaceChildren(...imageHistory.map((entry) =>
    historyItem(entry.prompt, "done", entry.url, () => showMedia("image", entry.url, "image.png"))));
}

async function submit(event) {
  event.preventDefault();
  $("error").hidden = true;
  if (!info || !info.defaults) {  // the form's first use is giving the key: describe the model with it
    localStorage.setItem("sgld-api-key", $("api-key").value);
    await init().catch((error) => showError(`Cannot reach the server: ${error.message}`));
    return;
  }
  if (!$("prompt").value.trim()) { showError("Write a prompt first."); $("prompt").focus(); return; }
  localStorage.setItem("sgld-api-key", $("api-key").value);
  $("submit").disabled = true;
  try {
    if (info.kind === "video") await runVideo();
    else await runImage();
  } catch (error) {
    showError(error.message);
  } finally {
    $("submit").disabled = false;
  }
}

async function init() {
  $("api-key").value = localStorage.getItem("sgld-api-key") || "";
  info = await (await fetch("/playground/info", { headers: authHeaders() })).json();
  if (!info.defaults) {  // the server wants its API key before it describes the model
    $("api-key-field").hidden = false;
    $("model-line").textContent = "This server needs its API key: enter it and press Enter to load the model's settings.";
    return;
  }
  const d = info.defaults;
  const mode = info.kind === "image" ? (info.needs_image ? " editing" : " from text, optionally with reference images")
    : (info.needs_image ? " from an image" : " from text or an image");
  $("model-line").textContent = `Model: ${info.model} — ${info.kind}${info.takes_image ? mode : ""}`;
  setValue("width", d.width); setValue("height", d.height); setValue("num-frames", d.num_frames);
  setValue("steps", d.num_inference_steps); setValue("seed", d.seed); setValue("guidance", d.guidance_scale);
  setValue("negative-prompt", d.negative_prompt);
  if (d.width === null) { $("width").placeholder = "from input"; $("height").placeholder = "from input"; }
  for (const el of document.querySelectorAll(".video-only")) el.hidden = info.kind !== "video";
  $("image-field").hidden = !info.takes_image;
  if (info.max_input_images > 1) {
    $("image").multiple = true;
    $("image-label").textContent = info.needs_image
      ? `Input images, 1 to ${info.max_input_images} (PNG, JPEG or WebP; numbered in the order chosen)`
      : `Reference images, optional, up to ${info.max_input_images} (PNG, JPEG or WebP)`;
  }
  if (info.kind === "video") $("image-label").textContent = info.needs_image
    ? "First frame (PNG, JPEG or WebP)" : "First frame (optional: PNG, JPEG or WebP)";
  $("api-key-field").hidden = !info.api_key_required;
  $("lora-field").hidden = !info.loras;
  for (const name of info.loras || []) {
    const option = document.createElement("option");
    option.value = name;
    option.textContent = name;
    $("lora").append(option);
  }
  loadHistory();
}

$("form").addEventListener("submit", submit);
init().catch((error) => showError(`Cannot reach the server: ${error.message}`));
