"""The page of a Turing-test study (dermgan.turing.render_page fills it in): one self-contained HTML file.

Everything is inline (styles, script, images as data URIs) and a Content-Security-Policy forbids any network
request, so the file works offline from a USB stick or an e-mail attachment. The page never holds the truth of
an item (real or which model): only ids and pixels; the truth stays in the study manifest beside it.

Answers live in the browser's localStorage under the study id and the rater id, so a reload or a closed tab
loses nothing; "Download answers" writes them as CSV (columns = dermgan.turing.RESPONSE_COLUMNS).
"""

PAGE_TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
      content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 0; background: #f4f4f2; color: #222; }
  main { max-width: 980px; margin: 0 auto; padding: 16px 20px; }
  header { display: flex; justify-content: space-between; align-items: baseline; flex-wrap: wrap; gap: 8px; }
  h1 { font-size: 1.3rem; margin: 0 0 4px; }
  .muted { color: #666; font-size: 0.9rem; }
  .panel { background: #fff; border-radius: 8px; padding: 16px 20px; margin-top: 12px;
           box-shadow: 0 1px 3px rgba(0,0,0,.12); }
  #item { display: grid; grid-template-columns: auto 1fr; gap: 24px; align-items: start; }
  #image { image-rendering: pixelated; border: 1px solid #ccc; background: #000; display: block; }
  .question { margin-bottom: 14px; }
  .question h2 { font-size: 1rem; margin: 0 0 6px; }
  .choices { display: flex; flex-wrap: wrap; gap: 6px; }
  button { font: inherit; padding: 6px 12px; border-radius: 6px; border: 1px solid #999; background: #fafafa;
           cursor: pointer; }
  button:disabled { opacity: .45; cursor: default; }
  button.chosen { background: #1f5fa8; border-color: #1f5fa8; color: #fff; }
  kbd { font-family: ui-monospace, monospace; font-size: .8em; border: 1px solid #aaa; border-radius: 3px;
        padding: 0 4px; background: #eee; color: #222; margin-right: 4px; }
  button.chosen kbd { background: #fff; }
  #progress-bar { height: 6px; background: #ddd; border-radius: 3px; margin-top: 8px; }
  #progress-fill { height: 6px; background: #1f5fa8; border-radius: 3px; width: 0; }
  .nav { display: flex; gap: 8px; margin-top: 10px; }
  #status { min-height: 1.2em; }
  input[type=text] { font: inherit; padding: 6px 8px; width: 16em; }
  .hidden { display: none !important; }
  ul.keys { margin: 6px 0 0; padding-left: 18px; }
</style>
</head>
<body>
<main>
  <header>
    <div>
      <h1>__TITLE__</h1>
      <div class="muted">Study <span id="study-id"></span> · <span id="n-items"></span> images ·
        rater <b id="rater-shown">–</b></div>
    </div>
    <div class="muted" id="progress-text"></div>
  </header>
  <div id="progress-bar"><div id="progress-fill"></div></div>

  <section class="panel" id="start">
    <p>Some of these skin images come from a collection of skin images (<b>real</b>) and some were made by a
      generative computer model (<b>synthetic</b>). For each image, say which you think it is, how sure you are, and which condition it
      shows. There is no time limit. Your answers are saved in this browser as you go; when you have finished,
      download them and send the file to the study's organiser.</p>
    <p id="note">__NOTE__</p>
    <p><label>Your rater id (letters, digits, <code>-</code> <code>_</code> <code>.</code>):
      <input type="text" id="rater" maxlength="64" autocomplete="off"></label>
      <button id="start-button">Start</button></p>
    <p class="muted" id="start-error"></p>
  </section>

  <section class="panel hidden" id="item">
    <div><img id="image" alt="skin image to rate"></div>
    <div>
      <div class="question"><h2>1. Is this image real or synthetic?</h2>
        <div class="choices" id="answer-choices"></div></div>
      <div class="question"><h2>2. How sure are you?</h2>
        <div class="choices" id="confidence-choices"></div></div>
      <div class="question"><h2>3. Which condition does it show?</h2>
        <div class="choices" id="condition-choices"></div></div>
      <div class="nav">
        <button id="previous"><kbd>←</kbd>Previous</button>
        <button id="next"><kbd>Enter</kbd>Next</button>
      </div>
    </div>
  </section>

  <section class="panel hidden" id="done">
    <p><b>All images are answered. Thank you!</b> Download your answers and send the file to the organiser.
      You can still go back and change an answer.</p>
    <button id="back-to-items">Back to the images</button>
  </section>

  <section class="panel hidden" id="tools">
    <button id="export">Download answers (CSV)</button>
    <button id="switch-rater">Change rater</button>
    <span class="muted" id="status"></span>
    <div class="muted">Keys: <ul class="keys">
      <li><kbd>R</kbd> real, <kbd>S</kbd> synthetic; <kbd>1</kbd><kbd>2</kbd><kbd>3</kbd> confidence;
        the letter on a condition button picks it</li>
      <li><kbd>Enter</kbd> or <kbd>→</kbd> next (once all three are answered), <kbd>←</kbd> previous</li>
    </ul></div>
  </section>
</main>

<script type="application/json" id="study-data">__STUDY_JSON__</script>
<script>
"use strict";
const STUDY = JSON.parse(document.getElementById("study-data").textContent);
const COLUMNS = ["study_id", "rater_id", "item_id", "answer", "confidence", "condition", "answered_at"];
const ANSWERS = [["real", "r", "Real"], ["synthetic", "s", "Synthetic"]];
// Letters for the conditions: r and s are taken by the real/synthetic answer.
const CONDITION_KEYS = "abcdefghijklmnopqtuvwxyz".split("");
const PREFIX = "dermgan-turing/" + STUDY.study_id;
const RATER_PATTERN = /^[A-Za-z0-9_.-]{1,64}$/;

let rater = null;
let answers = {};   // item id -> {answer, confidence, condition, answered_at}
let position = 0;   // index into STUDY.items of the item on screen; === items.length on the done panel

const $ = (id) => document.getElementById(id);

function storageKey(name) { return PREFIX + "/" + name; }

function save() {
  localStorage.setItem(storageKey("rater"), rater);
  localStorage.setItem(storageKey("answers/" + rater), JSON.stringify({answers: answers, position: position}));
}

function loadRater(id) {
  rater = id;
  const saved = JSON.parse(localStorage.getItem(storageKey("answers/" + id)) || "null");
  answers = saved ? saved.answers : {};
  position = saved ? Math.min(saved.position, STUDY.items.length) : 0;
}

function isComplete(entry) {
  return !!entry && entry.answer && entry.confidence && entry.condition;
}

function nComplete() {
  return STUDY.items.filter((item) => isComplete(answers[item.id])).length;
}

function makeButton(label, key, onClick) {
  const button = document.createElement("button");
  if (key) {
    const kbd = document.createElement("kbd");
    kbd.textContent = key.toUpperCase();
    button.appendChild(kbd);
  }
  button.appendChild(document.createTextNode(label));
  button.addEventListener("click", onClick);
  return button;
}

function buildChoices() {
  for (const [value, key, label] of ANSWERS) {
    const b = makeButton(label, key, () => choose("answer", value));
    b.dataset.answer = value;
    $("answer-choices").appendChild(b);
  }
  STUDY.confidence_levels.forEach((level, i) => {
    const b = makeButton(STUDY.confidence_labels[i], String(level), () => choose("confidence", level));
    b.dataset.confidence = String(level);
    $("confidence-choices").appendChild(b);
  });
  STUDY.classes.forEach((name, i) => {
    const key = i < CONDITION_KEYS.length ? CONDITION_KEYS[i] : null;
    const b = makeButton(name.replace(/_/g, " "), key, () => choose("condition", name));
    b.dataset.condition = name;
    if (key) b.dataset.key = key;
    $("condition-choices").appendChild(b);
  });
}

function choose(field, value) {
  if (position >= STUDY.items.length) return;
  const id = STUDY.items[position].id;
  const entry = answers[id] || {};
  entry[field] = value;
  entry.answered_at = new Date().toISOString();
  answers[id] = entry;
  save();
  render();
}

function go(step) {
  const target = position + step;
  if (step > 0 && position < STUDY.items.length && !isComplete(answers[STUDY.items[position].id])) return;
  if (target < 0 || target > STUDY.items.length) return;
  position = target;
  save();
  render();
}

function render() {
  const n = STUDY.items.length;
  const done = nComplete();
  $("rater-shown").textContent = rater || "–";
  $("progress-text").textContent = rater ? (done + " of " + n + " answered") : "";
  $("progress-fill").style.width = (100 * done / n) + "%";
  $("start").classList.toggle("hidden", !!rater);
  $("tools").classList.toggle("hidden", !rater);
  $("item").classList.toggle("hidden", !rater || position >= n);
  $("done").classList.toggle("hidden", !rater || position < n);
  if (!rater || position >= n) return;
  const item = STUDY.items[position];
  const entry = answers[item.id] || {};
  const image = $("image");
  image.src = item.src;
  // Integer upscaling with pixelated rendering: the rater sees the pixels as generated, nothing smoothed.
  const scale = Math.max(1, Math.floor(STUDY.display_size / STUDY.image_size));
  image.width = image.height = STUDY.image_size * scale;
  image.dataset.itemId = item.id;
  $("progress-text").textContent = "Image " + (position + 1) + " of " + n + " · " + done + " answered";
  for (const b of document.querySelectorAll("#answer-choices button"))
    b.classList.toggle("chosen", entry.answer === b.dataset.answer);
  for (const b of document.querySelectorAll("#confidence-choices button"))
    b.classList.toggle("chosen", String(entry.confidence) === b.dataset.confidence);
  for (const b of document.querySelectorAll("#condition-choices button"))
    b.classList.toggle("chosen", entry.condition === b.dataset.condition);
  $("previous").disabled = position === 0;
  $("next").disabled = !isComplete(entry);
}

function csvField(value) {
  const text = String(value);
  return /[",\r\n]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
}

function exportCsv() {
  const lines = [COLUMNS.join(",")];
  for (const item of STUDY.items) {
    const e = answers[item.id];
    if (!isComplete(e)) continue;
    const row = [STUDY.study_id, rater, item.id, e.answer, e.confidence, e.condition, e.answered_at];
    lines.push(row.map(csvField).join(","));
  }
  const blob = new Blob([lines.join("\r\n") + "\r\n"], {type: "text/csv"});
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = "turing_" + STUDY.study_id + "_" + rater + ".csv";
  document.body.appendChild(link);
  link.click();
  link.remove();
  $("status").textContent = "Downloaded " + (lines.length - 1) + " of " + STUDY.items.length + " answers.";
}

function start() {
  const id = $("rater").value.trim();
  if (!RATER_PATTERN.test(id)) {
    $("start-error").textContent = "Please enter a rater id of 1-64 letters, digits, '-', '_' or '.'.";
    return;
  }
  loadRater(id);
  save();
  render();
}

function onKey(event) {
  if (event.target.tagName === "INPUT") {
    if (event.key === "Enter") start();
    return;
  }
  if (!rater || event.ctrlKey || event.metaKey || event.altKey) return;
  const key = event.key.toLowerCase();
  if (key === "enter" || key === "arrowright") { go(1); event.preventDefault(); return; }
  if (key === "arrowleft") { go(-1); event.preventDefault(); return; }
  if (position >= STUDY.items.length) return;
  for (const [value, k] of ANSWERS) if (key === k) return choose("answer", value);
  const level = STUDY.confidence_levels.find((l) => String(l) === key);
  if (level !== undefined) return choose("confidence", level);
  const i = CONDITION_KEYS.indexOf(key);
  if (i >= 0 && i < STUDY.classes.length) return choose("condition", STUDY.classes[i]);
}

$("study-id").textContent = STUDY.study_id;
$("n-items").textContent = STUDY.items.length;
buildChoices();
$("start-button").addEventListener("click", start);
$("previous").addEventListener("click", () => go(-1));
$("next").addEventListener("click", () => go(1));
$("back-to-items").addEventListener("click", () => go(-1));
$("export").addEventListener("click", exportCsv);
$("switch-rater").addEventListener("click", () => {
  localStorage.removeItem(storageKey("rater"));  // the answers of every rater stay stored
  rater = null; answers = {}; position = 0; $("rater").value = ""; render();
});
document.addEventListener("keydown", onKey);
const lastRater = localStorage.getItem(storageKey("rater"));
if (lastRater && RATER_PATTERN.test(lastRater)) loadRater(lastRater);
render();
</script>
</body>
</html>
"""
