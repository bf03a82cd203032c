// The studio page: five panels over the JSON API of ssvae_core/studio/server.py.
//
// Element ids (stable: the browser test drives them):
//   header    #run-name #run-step #num-labeled #accuracy (data-version: the model's version)
//             #annotator (who labels in this browser; kept in localStorage)
//             #retrain-badge; #message shows errors from the API (class "info" for notes)
//   tabs      #tab-queue #tab-map #tab-channels #tab-training #tab-history, each showing
//             #panel-queue #panel-map #panel-channels #panel-training #panel-history
//   filters   #filter-class #filter-min #filter-max #filter-channel #filter-labeled
//             #filter-count: what the map and the queue show
//   queue     #queue-strategy #queue-size #take-query #queue-status #current-image
//             (data-index) #current-info #label-buttons (.label-button[data-label])
//             #new-class-name #new-class #skip #undo #queue-thumbs
//             #grid-toggle #grid-apply #queue-grid (.grid-item[data-index] with a
//             .grid-label select, the prediction by default)
//   map       #map-projection #map-colour #map-plot (data-state "loading" while a map is
//             asked for, then "ready") #map-status (data-stale "1" while the map shows an
//             older model or labels changed since it was drawn) #hover-image #hover-info
//             #selection-count #label-selection (opens the preview) #undo-batch
//             preview   #selection-preview #preview-count #preview-thumbs #selection-label
//             (defaults to the selection's majority prediction) #confirm-selection
//             #cancel-selection
//   channels  #channels-list (.channel cards, #channel-<c>)
//   training  #retrain-steps #retrain #cancel-retrain #retrain-progress #retrain-state
//             (data-state: the job's state) #loss-plot
//   issues    #issues-size #find-issues #issues-status #issues-list (.issue[data-index]
//             cards with .issue-relabel and .issue-keep buttons)
//   history   #history-plot #history-table (rows: .history-withdraw buttons for studio
//             labels, .history-relabel selects for every current label)
//
// The token travels in a same-site cookie that the server set when the page was opened.
"use strict";

const $ = (id) => document.getElementById(id);

const studio = {
  info: null,          // /api/state
  version: -1,         // the model version shown
  queue: [],           // the items of the last query
  position: 0,         // the current item of the queue
  done: new Set(),     // queue items labeled or skipped
  map: null,           // the last /api/map reply
  mapStale: false,     // labels changed since the map was drawn
  mapPending: false,   // the map's data came while its panel was hidden: drawn when shown
  channelsStale: true, // the channels panel waits for its first showing (or a new model)
  hovered: null,       // the map point under the pointer
  selected: [],        // map points selected with the lasso or box
  polling: null,       // the retrain poll timer
};

// ---- talking to the server -------------------------------------------------------------

// Who labels in this browser: asked once, kept in localStorage, sent with every label.
const ANNOTATOR_KEY = "ssvae-studio-annotator";

function annotator() {
  return $("annotator").value.trim() || null;
}

async function api(path, body) {
  if (body && path === "/api/labels") {
    body = { ...body, annotator: annotator() };
  }
  const options = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  const reply = await fetch(path, { credentials: "same-origin", ...options });
  const data = await reply.json().catch(() => ({ error: `${reply.status} ${reply.statusText}` }));
  if (!reply.ok) {
    throw new Error(data.error || `${reply.status} ${reply.statusText}`);
  }
  return data;
}

function say(text, kind = "error") {
  const box = $("message");
  box.textContent = text;
  box.className = kind;
  box.hidden = false;
}

function quiet() {
  $("message").hidden = true;
}

async function attempt(action) {
  try {
    await action();
  } catch (error) {
    say(error.message);
  }
}

const percent = (value) => (value === null || value === undefined ? "–" : (100 * value).toFixed(1) + " %");
const imageUrl = (index) => `/api/examples/${index}.png`;

// ---- the header and the run's state ----------------------------------------------------

async function refreshState() {
  const info = await api("/api/state");
  studio.info = info;
  $("run-name").textContent = info.run;
  $("run-step").textContent = info.step;
  $("num-labeled").textContent = info.num_labeled;
  $("accuracy").textContent = percent(info.accuracy);
  $("accuracy").dataset.version = info.version;
  fillSelect($("queue-strategy"), info.strategies, $("queue-strategy").value || info.default_strategy);
  fillSelect($("map-projection"), info.projections, $("map-projection").value || info.projections[0]);
  fillSelect($("selection-label"), info.label_names, $("selection-label").value);
  fillSelect($("filter-class"), ["", ...info.model_labels], $("filter-class").value);
  $("filter-class").options[0].textContent = "any class";
  showMapStatus();
  drawLabelButtons();
  showJob(info.retrain);
  if (info.version !== studio.version) {
    const first = studio.version < 0;
    studio.version = info.version;
    const requery = !first && studio.queue.length > 0;
    // the channels' images are drawn when their panel is first shown, not while the page opens
    studio.channelsStale = true;
    const channels = $("panel-channels").hidden ? null : drawChannels();
    await Promise.all([drawMap(), channels, drawHistory(), requery ? takeQuery() : null]);
    if (!first) {
      say(`The model was retrained (version ${info.version}): the map, queue, channels and history show it now.`, "info");
    }
  }
}

function fillSelect(select, values, chosen) {
  const current = Array.from(select.options).map((o) => o.value);
  if (current.join("\u0000") !== values.join("\u0000")) {
    select.replaceChildren(...values.map((v) => new Option(v, v)));
  }
  if (values.includes(chosen)) {
    select.value = chosen;
  }
}

// ---- the queue ---------------------------------------------------------------------------

function drawLabelButtons() {
  const box = $("label-buttons");
  const keys = studio.info.shortcuts;
  const buttons = studio.info.label_names.map((name) => {
    const button = document.createElement("button");
    button.className = "label-button";
    button.dataset.label = name;
    button.textContent = name;
    if (keys[name]) {
      const key = document.createElement("kbd");
      key.textContent = keys[name];
      button.append(key);
    }
    button.addEventListener("click", () => {
      // the focus leaves the button: Enter must not give the next image this label unasked
      button.blur();
      attempt(() => labelCurrent(name, false));
    });
    return button;
  });
  box.replaceChildren(...buttons);
}

async function takeQuery() {
  const strategy = $("queue-strategy").value;
  const n = Number.parseInt($("queue-size").value, 10) || 20;
  $("queue-status").textContent = `asking ${strategy}…`;
  const reply = await api(`/api/queue?strategy=${encodeURIComponent(strategy)}&n=${n}`);
  studio.queue = reply.items;
  studio.position = 0;
  studio.done = new Set();
  quiet();
  drawQueue();
}

// The filters: predicted class, certainty range, channel, labeled or not. They apply to
// the map's points and to the queue's examples alike.
function passes(point) {
  const wanted = $("filter-class").value;
  const low = Number.parseFloat($("filter-min").value);
  const high = Number.parseFloat($("filter-max").value);
  const channel = $("filter-channel").value;
  const labeled = $("filter-labeled").value;
  return (!wanted || point.predicted === wanted)
    && !(point.certainty < (Number.isNaN(low) ? 0 : low))
    && !(point.certainty > (Number.isNaN(high) ? 1 : high))
    && (channel === "" || point.channel === Number(channel))
    && (!labeled || (labeled === "labeled") === (point.label !== null && point.label !== undefined));
}

function filtersChanged() {
  plotMap();
  if (studio.queue.length) {
    const first = studio.queue.findIndex((q, i) => !studio.done.has(i) && passes(q));
    studio.position = first < 0 ? studio.queue.length : first;
    drawQueue();
  }
}

function drawQueue() {
  let item = studio.queue[studio.position];
  if (item && !passes(item)) {
    item = undefined;
  }
  const image = $("current-image");
  if (!item) {
    image.hidden = true;
    $("current-info").textContent = studio.queue.length
      ? "This query is done: take another one."
      : "Take a query to see what the model would like labeled next.";
  } else {
    image.src = imageUrl(item.index);
    image.dataset.index = item.index;
    image.hidden = false;
    $("current-info").innerHTML = "";
    const why = document.createElement("div");
    why.id = "current-why";
    why.append(
      line("why: " + item.top.map(([name, p]) => `${name} ${(100 * p).toFixed(0)} %`).join(" or ")
        + (item.channel === null ? "" : `, channel ${item.channel}`)),
      line("nearest labeled: " + (item.neighbours.map((n) => `#${n.index} (${n.label})`).join(", ") || "none")),
    );
    const near = document.createElement("div");
    near.className = "neighbours";
    near.append(...item.neighbours.map((n) => {
      const img = document.createElement("img");
      img.src = imageUrl(n.index);
      img.alt = img.title = `#${n.index}, labeled ${n.label}`;
      return img;
    }));
    $("current-info").append(
      line(`example #${item.index}`),
      line(`predicted ${item.predicted}, certainty ${item.certainty.toFixed(3)}`),
      line(`score ${item.score === null ? "–" : item.score.toPrecision(4)}`),
      why, near,
    );
  }
  const thumbs = studio.queue.map((q, i) => [q, i]).filter(([q]) => passes(q)).map(([q, i]) => {
    const box = document.createElement("div");
    box.className = "thumb" + (i === studio.position ? " current" : "") + (studio.done.has(i) ? " done" : "");
    const img = document.createElement("img");
    img.src = imageUrl(q.index);
    img.alt = `example ${q.index}`;
    box.append(img, document.createTextNode(`→ ${q.predicted}`));
    box.addEventListener("click", () => { studio.position = i; drawQueue(); });
    return box;
  });
  $("queue-thumbs").replaceChildren(...thumbs);
  drawGrid();
  const left = studio.queue.length - studio.done.size;
  $("queue-status").textContent = studio.queue.length ? `${left} of ${studio.queue.length} left` : "";
}

// The grid: every example of the query still to label (within the filters) with a label
// picker set to its prediction; "Label these" gives them all at once, as one action.
function drawGrid() {
  const grid = $("queue-grid");
  if (grid.hidden) {
    return;
  }
  const items = studio.queue.map((q, i) => [q, i]).filter(([q, i]) => !studio.done.has(i) && passes(q));
  grid.replaceChildren(...items.map(([q, i]) => {
    const box = document.createElement("div");
    box.className = "grid-item";
    box.dataset.index = q.index;
    box.dataset.position = i;
    const img = document.createElement("img");
    img.src = imageUrl(q.index);
    img.alt = `example ${q.index}`;
    const pick = document.createElement("select");
    pick.className = "grid-label";
    pick.replaceChildren(new Option("skip", ""), ...studio.info.label_names.map((name) => new Option(name, name)));
    pick.value = q.predicted;
    box.append(img, pick);
    return box;
  }));
  $("grid-apply").hidden = items.length === 0;
  $("grid-apply").textContent = `Label these ${items.length}`;
}

async function labelGrid() {
  const boxes = [...document.querySelectorAll("#queue-grid .grid-item")];
  const chosen = boxes.filter((box) => box.querySelector("select").value !== "");
  if (!chosen.length) {
    throw new Error("every example of the grid is set to skip");
  }
  const labels = chosen.map((box) => ({ index: Number(box.dataset.index), label: box.querySelector("select").value }));
  const reply = await api("/api/labels", { labels });
  for (const box of chosen) {
    studio.done.add(Number(box.dataset.position));
  }
  afterLabels(reply);
  advance();
  say(`Labeled ${labels.length} examples (${reply.added} new); Undo takes them back as one.`, "info");
}

function line(text) {
  const div = document.createElement("div");
  div.textContent = text;
  return div;
}

function advance() {
  studio.done.add(studio.position);
  const next = studio.queue.findIndex((q, i) => !studio.done.has(i) && passes(q));
  studio.position = next < 0 ? studio.queue.length : next;
  drawQueue();
}

async function labelCurrent(name, newClass) {
  const item = studio.queue[studio.position];
  if (!item) {
    throw new Error("no image to label: take a query first");
  }
  const reply = await api("/api/labels", { labels: [{ index: item.index, label: name }], new_class: newClass });
  afterLabels(reply);
  advance();
}

function afterLabels(reply) {
  quiet();
  studio.mapStale = true;
  showMapStatus();
  $("num-labeled").textContent = reply.num_labeled;
  if (reply.label_names.join("\u0000") !== studio.info.label_names.join("\u0000")) {
    refreshState().catch((error) => say(error.message));
  }
}

async function newClass() {
  const name = $("new-class-name").value.trim();
  if (!name) {
    throw new Error("type the new class's name first");
  }
  await labelCurrent(name, true);
  $("new-class-name").value = "";
  $("new-class-name").blur();
}

// Undo takes back the latest studio action kept in the label store (one label, or a map
// selection as a whole), so it works the same after a reload or from another tab.
async function undo(body = {}) {
  const reply = await api("/api/undo", body);
  studio.mapStale = true;
  showMapStatus();
  $("num-labeled").textContent = reply.num_labeled;
  const removed = reply.removed;
  const positions = removed.map((e) => studio.queue.findIndex((q) => q.index === e.index)).filter((p) => p >= 0);
  for (const position of positions) {
    studio.done.delete(position);
  }
  if (positions.length) {
    studio.position = Math.min(...positions);
    drawQueue();
  }
  const what = removed.length === 1
    ? `label ${removed[0].label} of example #${removed[0].index}`
    : `${removed.length} labels ${[...new Set(removed.map((e) => e.label))].join(", ")}`;
  say(`Took back ${what}.`, "info");
  $("undo-batch").hidden = true;
  if (!$("panel-map").hidden) {
    await drawMap();
  }
  if (!$("panel-history").hidden) {
    await drawHistory();
  }
}

function onKey(event) {
  const target = event.target;
  if (target instanceof HTMLInputElement || target instanceof HTMLSelectElement || target instanceof HTMLTextAreaElement) {
    return;  // typing a name or a number: no shortcuts
  }
  if (event.key === "?" || (event.key === "Escape" && !$("help-overlay").hidden)) {
    event.preventDefault();
    $("help-overlay").hidden = !$("help-overlay").hidden || event.key === "Escape";
    return;
  }
  if (event.key === "+" && !$("panel-queue").hidden) {
    event.preventDefault();  // a new class: type its name, Enter gives it to the image
    $("new-class-name").focus();
    return;
  }
  if (event.key === "Enter" && target instanceof HTMLButtonElement && target.closest("#label-buttons")) {
    event.preventDefault();  // a label is given by its key or a click, never by Enter
    return;
  }
  const undoKey = event.key === "Backspace" || ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "z");
  if (undoKey && !$("panel-map").hidden) {
    event.preventDefault();
    attempt(() => undo());
    return;
  }
  if ($("panel-queue").hidden) {
    return;
  }
  if (undoKey) {
    event.preventDefault();
    attempt(() => undo());
    return;
  }
  if (event.ctrlKey || event.metaKey || event.altKey) {
    return;
  }
  if (event.key === "ArrowRight" || event.key === " ") {
    event.preventDefault();
    if (studio.queue[studio.position]) {
      advance();
    }
    return;
  }
  const keys = studio.info ? studio.info.shortcuts : {};
  const name = Object.keys(keys).find((label) => keys[label] === event.key.toLowerCase());
  if (name !== undefined) {
    event.preventDefault();
    attempt(() => labelCurrent(name, false));
  }
}

// ---- the map -----------------------------------------------------------------------------

// Twenty distinguishable colours: ten saturated, then ten lighter ones (classes past ten,
// channels, new classes).
const PALETTE = [
  "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
  "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
];
const UNLABELED = "#bbbbbb";
const PROJECTION_TITLES = {
  classes: "the classifier's probabilities among the classes, spread by z within each",
  pca: "PCA of the posterior means",
  channels: "q(c|x) over channel anchors, PCA of the means within",
  tsne: "t-SNE of the posterior means",
  "tsne-channels": "t-SNE of the posterior means and q(c|x)",
};

// A class keeps its colour in every colour mode and after new classes: its position among
// the run's label names picks it (never the order the names sort in).
function classColour(name) {
  const position = studio.info ? studio.info.label_names.indexOf(name) : -1;
  return position < 0 ? UNLABELED : PALETTE[position % PALETTE.length];
}

async function drawMap() {
  const projection = $("map-projection").value || studio.info.projections[0];
  $("map-plot").dataset.state = "loading";
  const started = Date.now();
  const status = $("map-status");
  const tick = () => {  // t-SNE takes a while: say so, and for how long it has been at it
    const seconds = Math.round((Date.now() - started) / 1000);
    status.textContent = `computing the ${projection} map of model version ${studio.version}… ${seconds} s`;
    status.dataset.stale = "1";
  };
  tick();
  const timer = setInterval(tick, 1000);
  try {
    studio.map = await api(`/api/map?projection=${encodeURIComponent(projection)}`);
    studio.mapStale = false;
  } finally {
    clearInterval(timer);
    $("map-plot").dataset.state = "ready";
    showMapStatus();
  }
  studio.selected = [];
  showSelection();
  plotMap();
}

function showMapStatus() {
  const status = $("map-status");
  const map = studio.map;
  if (!map || $("map-plot").dataset.state === "loading") {
    return;
  }
  let text = `model version ${map.version}`;
  let stale = false;
  if (studio.info && map.version !== studio.info.version) {
    text = `stale: this map shows model version ${map.version}; the model is at version ${studio.info.version}`;
    stale = true;
  } else if (studio.mapStale) {
    text += "; labels changed since it was drawn (reopen the tab to redraw)";
    stale = true;
  }
  status.textContent = text;
  status.dataset.stale = stale ? "1" : "0";
}

function plotMap() {
  const data = studio.map;
  if (!data) {
    return;
  }
  const colour = $("map-colour").value;
  const point = (i) => i;
  const shown = data.index.map((_, i) => i).filter((i) => passes({
    predicted: data.predicted[i], certainty: data.certainty[i], channel: data.channel[i], label: data.label[i],
  }));
  $("filter-count").textContent = `${shown.length} of ${data.index.length} examples on the map`;
  // thousands of points are drawn once, when the map is shown, not while it is hidden
  studio.mapPending = $("panel-map").hidden;
  if (studio.mapPending) {
    return;
  }
  const keep = new Set(shown);
  let traces;
  if (colour === "ood") {
    traces = [{
      x: shown.map((i) => data.x[i]), y: shown.map((i) => data.y[i]), customdata: shown.map((i) => data.index[i]),
      mode: "markers", type: "scatter", name: "OOD score",
      marker: { size: 5, color: shown.map((i) => data.ood[i]), colorscale: "Viridis", showscale: true, colorbar: { title: { text: "OOD" } } },
      hovertemplate: "#%{customdata}<extra></extra>",
    }];
  } else {
    const values = data[colour].map((v, i) => (!keep.has(i) ? null : v === null ? "unlabeled" : String(v)));
    const order = (v) => (colour === "channel" ? Number(v) : studio.info.label_names.indexOf(v));
    const groups = [...new Set(values.filter((v) => v !== null))].sort((a, b) => (a === "unlabeled") - (b === "unlabeled") || order(a) - order(b));
    const colourOf = (group) => {
      if (group === "unlabeled") return UNLABELED;
      return colour === "channel" ? PALETTE[Number(group) % PALETTE.length] : classColour(group);
    };
    traces = groups.map((group) => {
      const rows = values.map((v, i) => (v === group ? i : -1)).filter((i) => i >= 0).map(point);
      return {
        x: rows.map((i) => data.x[i]), y: rows.map((i) => data.y[i]), customdata: rows.map((i) => data.index[i]),
        mode: "markers", type: "scatter", name: (colour === "channel" ? "c=" : "") + group,
        marker: { size: 5, color: colourOf(group), opacity: group === "unlabeled" ? 0.25 : 0.8 },
        hovertemplate: "#%{customdata}<extra></extra>",
      };
    });
  }
  const layout = {
    margin: { l: 30, r: 10, t: 30, b: 30 }, dragmode: "lasso", hovermode: "closest", colorway: PALETTE,
    title: { text: `${PROJECTION_TITLES[data.projection] || data.projection} (model version ${data.version})`, font: { size: 13 } },
    xaxis: { showticklabels: false, zeroline: false }, yaxis: { showticklabels: false, zeroline: false },
  };
  const plot = $("map-plot");
  Plotly.react(plot, traces, layout, { displaylogo: false, responsive: true });
  if (!plot.dataset.wired) {
    plot.dataset.wired = "1";
    plot.on("plotly_hover", (event) => attempt(() => showHover(event.points[0].customdata)));
    plot.on("plotly_selected", (event) => {
      studio.selected = event && event.points ? event.points.map((p) => p.customdata) : [];
      showSelection();
    });
    plot.on("plotly_deselect", () => { studio.selected = []; showSelection(); });
  }
}

async function showHover(index) {
  studio.hovered = index;
  const example = await api(`/api/examples/${index}`);
  if (studio.hovered !== index) {
    return;  // the pointer moved on while this one was asked for
  }
  const image = $("hover-image");
  image.src = imageUrl(index);
  image.hidden = false;
  $("hover-info").replaceChildren(
    line(`example #${index}` + (example.label === null ? "" : `, labeled ${example.label}`)),
    line(`predicted ${example.predicted}, certainty ${example.certainty.toFixed(3)}`),
    line(example.channel === null ? "" : `channel ${example.channel}`),
  );
}

function showSelection() {
  const count = studio.selected.length;
  $("selection-count").textContent = count
    ? `${count} selected`
    : "Select points with the lasso or box tool to label them together.";
  $("label-selection").disabled = count === 0;
  $("label-selection").textContent = `Label ${count} selected…`;
  $("selection-preview").hidden = true;
}

const PREVIEW_THUMBS = 12;

// A selection is labeled through a preview: how many, a few of them, and the label they
// will get (the majority of the model's predictions unless changed), then a confirmation.
function previewSelection() {
  const chosen = studio.selected;
  if (!chosen.length) {
    throw new Error("select points with the lasso or box tool first");
  }
  const position = new Map(studio.map.index.map((index, i) => [index, i]));
  const votes = new Map();
  for (const index of chosen) {
    const predicted = studio.map.predicted[position.get(index)];
    votes.set(predicted, (votes.get(predicted) || 0) + 1);
  }
  const [majority, count] = [...votes.entries()].sort((a, b) => b[1] - a[1])[0];
  $("selection-label").value = majority;
  const labeled = chosen.filter((index) => studio.map.label[position.get(index)] !== null).length;
  $("preview-count").textContent = `Label ${chosen.length} examples as the one class below? ` +
    `The model predicts ${majority} for ${count} of them` + (labeled ? `; ${labeled} hold a label already.` : ".");
  const step = Math.max(1, Math.floor(chosen.length / PREVIEW_THUMBS));
  const shown = chosen.filter((_, i) => i % step === 0).slice(0, PREVIEW_THUMBS);
  $("preview-thumbs").replaceChildren(...shown.map((index) => {
    const img = document.createElement("img");
    img.src = imageUrl(index);
    img.alt = `example ${index}`;
    img.title = `#${index}, predicted ${studio.map.predicted[position.get(index)]}`;
    return img;
  }));
  $("selection-preview").hidden = false;
}

async function labelSelection() {
  const name = $("selection-label").value;
  if (!studio.selected.length || !name) {
    throw new Error("select points and a label first");
  }
  const count = studio.selected.length;
  const labels = studio.selected.map((index) => ({ index, label: name }));
  const reply = await api("/api/labels", { labels });
  afterLabels(reply);
  await drawMap();
  say(`Labeled ${count} examples ${name} (${reply.added} new); Undo takes them back as one.`, "info");
  $("undo-batch").hidden = reply.added === 0;
}

// ---- channels ----------------------------------------------------------------------------

async function drawChannels() {
  studio.channelsStale = false;
  const reply = await api("/api/channels");
  if (!reply.channels.length) {
    $("channels-list").replaceChildren(line("This model has no channels (its prior has one component)."));
    return;
  }
  const cards = reply.channels.map((c) => {
    const card = document.createElement("div");
    card.className = "channel" + (c.free ? " free" : "");
    card.id = `channel-${c.channel}`;
    const title = document.createElement("div");
    title.innerHTML = `<b>channel ${c.channel}</b> usage ${(100 * c.usage).toFixed(1)} %, owner `;
    title.append(document.createTextNode(c.owner === null ? "none" : c.owner), " ");
    const badge = document.createElement("span");
    badge.className = "badge" + (c.free ? " free" : "");
    badge.textContent = c.free ? "free" : "owned";
    title.append(badge);
    const bars = document.createElement("div");
    bars.className = "tau";
    bars.title = "τ row: the label distribution of this channel";
    const names = document.createElement("div");
    names.className = "tau-names";
    c.tau.forEach((value, y) => {
      const bar = document.createElement("span");
      bar.style.height = `${Math.max(1, 100 * value)}%`;
      bar.title = `${reply.label_names[y]}: ${value.toFixed(3)}`;
      bars.append(bar);
      const name = document.createElement("span");
      name.textContent = reply.label_names[y];
      names.append(name);
    });
    const strip = document.createElement("img");
    strip.src = `/api/channels/${c.channel}.png?v=${reply.version}`;
    strip.alt = `members of channel ${c.channel} and their reconstructions through it`;
    card.append(title, bars, names, strip);
    return card;
  });
  $("channels-list").replaceChildren(...cards);
}

// ---- training ----------------------------------------------------------------------------

async function retrain() {
  const steps = Number.parseInt($("retrain-steps").value, 10);
  const job = await api("/api/retrain", { steps });
  quiet();
  showJob(job);
}

async function cancelRetrain() {
  showJob(await api("/api/retrain/cancel", {}));
}

function showJob(job) {
  const running = job.state === "running";
  $("retrain").disabled = running;
  $("cancel-retrain").disabled = !running;
  $("retrain-progress").max = Math.max(job.total, 1);
  $("retrain-progress").value = job.step;
  let text = job.state === "idle" ? "idle" : `${job.state}: step ${job.step} of ${job.total}`;
  if (job.state === "done" && job.accuracy !== null) {
    text += `, held-out accuracy ${percent(job.accuracy)}`;
  }
  if (job.state === "done" && job.prediction_change !== null) {  // the stopping signal
    text += `; it changed the prediction of ${percent(job.prediction_change)} of the unlabeled examples` +
      (job.prediction_change < 0.01 ? " (under 1 %: more labels of this kind have stopped paying)" : "");
  }
  if (job.message) {
    text += ` — ${job.message}`;
  }
  $("retrain-state").textContent = text;
  $("retrain-state").dataset.state = job.state;
  $("retrain-badge").textContent = running ? `retraining ${job.step}/${job.total}` : "";
  if (job.history.length) {
    const steps = job.history.map((h) => h.step);
    const traces = [{ x: steps, y: job.history.map((h) => h.loss), mode: "lines+markers", name: "loss" }];
    const scored = job.history.filter((h) => h.held_out_accuracy !== undefined);
    if (scored.length) {  // the run's train.eval_every: the held-out accuracy as it trains
      traces.push({
        x: scored.map((h) => h.step), y: scored.map((h) => h.held_out_accuracy), yaxis: "y2",
        mode: "lines+markers", name: "held-out accuracy",
      });
    }
    Plotly.react($("loss-plot"), traces, {
      margin: { l: 50, r: 60, t: 30, b: 40 }, title: { text: "during this retrain", font: { size: 13 } },
      xaxis: { title: { text: "step" } }, yaxis: { title: { text: "loss" } },
      yaxis2: { title: { text: "held-out accuracy" }, overlaying: "y", side: "right", tickformat: ".1%" },
      legend: { orientation: "h" },
    }, { displaylogo: false });
  }
  if (job.state === "failed" && job.message) {
    say(`The retrain failed: ${job.message}`);
  }
  if (running && studio.polling === null) {
    studio.polling = setInterval(() => attempt(pollJob), 1000);
  }
}

async function pollJob() {
  const job = await api("/api/retrain");
  showJob(job);
  if (job.state !== "running") {
    clearInterval(studio.polling);
    studio.polling = null;
    await refreshState();
  }
}

// ---- history -----------------------------------------------------------------------------

async function drawHistory() {
  const reply = await api("/api/history");
  const rows = reply.entries.slice(0, 500).map((e) => {
    const row = document.createElement("tr");
    row.dataset.index = e.index;
    row.className = e.current ? "current" : "superseded";
    for (const value of [e.time.replace("T", " ").replace("Z", ""), `#${e.index}`, e.label, e.source, e.annotator || ""]) {
      const cell = document.createElement("td");
      cell.textContent = value;
      row.append(cell);
    }
    const actions = document.createElement("td");
    if (e.current) {  // a current label can be corrected; a studio one also withdrawn
      const relabel = document.createElement("select");
      relabel.className = "history-relabel";
      relabel.title = "give this example another label";
      relabel.replaceChildren(...studio.info.label_names.map((name) => new Option(name, name)));
      relabel.value = e.label;
      relabel.addEventListener("change", () => attempt(async () => {
        await api("/api/labels", { labels: [{ index: e.index, label: relabel.value }], relabel: true });
        studio.mapStale = true;
        say(`Example #${e.index} is labeled ${relabel.value} now (was ${e.label}); Undo takes it back.`, "info");
        await Promise.all([drawHistory(), refreshCount()]);
      }));
      actions.append(relabel);
      if (e.source === "studio") {
        const withdraw = document.createElement("button");
        withdraw.className = "history-withdraw";
        withdraw.textContent = "withdraw";
        withdraw.addEventListener("click", () => attempt(() => undo({ index: e.index, label: e.label })));
        actions.append(withdraw);
      }
    }
    row.append(actions);
    return row;
  });
  $("history-table").tBodies[0].replaceChildren(...rows);
  const votes = reply.agreement;
  $("history-agreement").textContent = Object.entries(votes.annotators)
    .map(([name, row]) => `${name}: ${row.labels}` + (row.shared ? ` (${row.agreed}/${row.shared} shared agree)` : ""))
    .join(", ") + (votes.agreement === null ? "" : `; agreement ${percent(votes.agreement)} over ${votes.shared} examples labeled by several`);
  const rounds = reply.rounds;
  // the axis spans the accuracies seen, within 0–100 % (one round is a point, not a 0–150 % axis)
  const accuracies = rounds.map((r) => r.test_accuracy).filter((a) => a !== null && a !== undefined);
  const low = accuracies.length ? Math.max(0, Math.min(...accuracies) - 0.05) : 0;
  const high = accuracies.length ? Math.min(1, Math.max(...accuracies) + 0.05) : 1;
  Plotly.react($("history-plot"), [{
    x: rounds.map((r) => r.labels), y: rounds.map((r) => r.test_accuracy), mode: "lines+markers",
    text: rounds.map((r) => `round ${r.round} (${r.command}), step ${r.to_step}`), name: "held-out accuracy",
  }], {
    margin: { l: 50, r: 10, t: 30, b: 40 }, title: { text: "held-out accuracy after each training round", font: { size: 13 } },
    xaxis: { title: { text: "labels used" } },
    yaxis: { title: { text: "accuracy" }, tickformat: ".1%", range: [low, high] },
  }, { displaylogo: false });
}

async function refreshCount() {
  const info = await api("/api/state");
  $("num-labeled").textContent = info.num_labeled;
}

// ---- label issues ------------------------------------------------------------------------

async function findIssues() {
  const n = Number.parseInt($("issues-size").value, 10) || 20;
  $("issues-status").textContent = "looking…";
  const reply = await api(`/api/issues?n=${n}`);
  const cards = reply.items.map((item) => {
    const card = document.createElement("div");
    card.className = "issue";
    card.dataset.index = item.index;
    const img = document.createElement("img");
    img.src = imageUrl(item.index);
    img.alt = `example ${item.index}`;
    const text = document.createElement("div");
    text.append(
      line(`#${item.index}, labeled ${item.label} (${item.source}): p = ${item.p_label.toFixed(3)}`),
      line(`the model suggests ${item.suggested}: p = ${item.p_suggested.toFixed(3)}`),
    );
    const relabel = document.createElement("button");
    relabel.className = "issue-relabel";
    relabel.textContent = `Relabel ${item.suggested}`;
    relabel.addEventListener("click", () => attempt(() => review(card, item, item.suggested)));
    const keep = document.createElement("button");
    keep.className = "issue-keep";
    keep.textContent = `Keep ${item.label}`;
    keep.addEventListener("click", () => attempt(() => review(card, item, item.label)));
    text.append(relabel, keep);
    card.append(img, text);
    return card;
  });
  $("issues-list").replaceChildren(...cards);
  $("issues-status").textContent = cards.length
    ? `${cards.length} disputed labels (model version ${reply.version})`
    : "no label is disputed";
}

// Relabel or keep: either way the label is marked as reviewed and not proposed again.
async function review(card, item, label) {
  const reply = await api("/api/labels", {
    labels: [{ index: item.index, label }], relabel: label !== item.label, confirm: true,
  });
  afterLabels(reply);
  card.remove();
  say(label === item.label ? `Kept ${label} for #${item.index}.` : `#${item.index} is labeled ${label} now (was ${item.label}).`, "info");
}

// ---- wiring ------------------------------------------------------------------------------

function showPanel(name) {
  for (const tab of document.querySelectorAll(".tab")) {
    tab.classList.toggle("active", tab.dataset.panel === name);
  }
  for (const panel of document.querySelectorAll(".panel")) {
    panel.hidden = panel.id !== `panel-${name}`;
  }
  // plots drawn while their panel was hidden take their size now
  for (const plot of document.querySelectorAll(`#panel-${name} .js-plotly-plot`)) {
    if (!(name === "map" && studio.mapPending)) {
      Plotly.Plots.resize(plot);
    }
  }
  if (name === "map" && studio.mapPending && !studio.mapStale) {
    plotMap();
  }
  if (name === "channels" && studio.channelsStale) {
    attempt(drawChannels);
  }
  if (name === "map" && studio.mapStale) {
    attempt(drawMap);
  }
  if (name === "history") {
    attempt(drawHistory);
  }
}

function wire() {
  $("annotator").value = localStorage.getItem(ANNOTATOR_KEY) || "";
  $("annotator").addEventListener("change", () => localStorage.setItem(ANNOTATOR_KEY, $("annotator").value.trim()));
  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => showPanel(tab.dataset.panel));
  }
  $("take-query").addEventListener("click", () => attempt(takeQuery));
  $("skip").addEventListener("click", () => { if (studio.queue[studio.position]) advance(); });
  $("undo").addEventListener("click", () => attempt(() => undo()));
  $("undo-batch").addEventListener("click", () => attempt(() => undo()));
  $("new-class").addEventListener("click", () => attempt(newClass));
  $("new-class-name").addEventListener("keydown", (event) => {
    if (event.key === "Enter") attempt(newClass);
  });
  $("map-projection").addEventListener("change", () => attempt(drawMap));
  $("map-colour").addEventListener("change", plotMap);
  for (const id of ["filter-class", "filter-min", "filter-max", "filter-channel", "filter-labeled"]) {
    $(id).addEventListener("change", filtersChanged);
  }
  $("label-selection").addEventListener("click", () => attempt(async () => previewSelection()));
  $("confirm-selection").addEventListener("click", () => attempt(labelSelection));
  $("cancel-selection").addEventListener("click", () => { $("selection-preview").hidden = true; });
  $("retrain").addEventListener("click", () => attempt(retrain));
  $("find-issues").addEventListener("click", () => attempt(findIssues));
  $("grid-toggle").addEventListener("click", () => { $("queue-grid").hidden = !$("queue-grid").hidden; drawQueue(); });
  $("grid-apply").addEventListener("click", () => attempt(labelGrid));
  $("cancel-retrain").addEventListener("click", () => attempt(cancelRetrain));
  document.addEventListener("keydown", onKey);
}

wire();
attempt(refreshState);
