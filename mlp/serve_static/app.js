// The page of `--mode=serve`: draw a digit, and the server reads it as you draw.
//
// The drawing is sent as a PNG to POST /api/predict, the code path of
// --mode=predict; at most one request is in flight, and a newer drawing is
// sent when it returns. `window.digitPage` lets a test wait for the reading
// of the latest drawing and see the PNG that was sent.
'use strict';

const LINE_WIDTH = 18; // of the pad's 280 pixels: about MNIST's share
const pad = document.getElementById('pad');
const context = pad.getContext('2d');
const strokes = []; // each a list of [x, y] in the pad's pixels
let drawing = null; // the stroke under the pointer
let changed = false; // a drawing newer than the last one sent
let drawingInFlight = false; // at most one drawing is sent at a time
let pending = 0; // requests in flight
let sentBlob = null; // the PNG of the latest reading shown
let waiting = []; // `settled()` promises to resolve once nothing is pending
let generation = 0; // counts clears, undos and photos: older readings are stale
let readings = 0; // readings shown so far

function paint() {
  context.fillStyle = '#fff';
  context.fillRect(0, 0, pad.width, pad.height);
  context.strokeStyle = '#000';
  context.fillStyle = '#000';
  context.lineWidth = LINE_WIDTH;
  context.lineCap = 'round';
  context.lineJoin = 'round';
  for (const stroke of strokes) {
    if (stroke.length === 1) {
      context.beginPath();
      context.arc(stroke[0][0], stroke[0][1], LINE_WIDTH / 2, 0, 2 * Math.PI);
      context.fill();
      continue;
    }
    context.beginPath();
    context.moveTo(stroke[0][0], stroke[0][1]);
    for (const [x, y] of stroke.slice(1)) context.lineTo(x, y);
    context.stroke();
  }
}

function point(event) {
  const box = pad.getBoundingClientRect();
  return [
    ((event.clientX - box.left) * pad.width) / box.width,
    ((event.clientY - box.top) * pad.height) / box.height,
  ];
}

pad.addEventListener('pointerdown', (event) => {
  if (event.button !== 0) return;
  if (photoURL) generation++; // the photo's reading, if still coming, is stale
  pad.setPointerCapture(event.pointerId);
  drawing = [point(event)];
  strokes.push(drawing);
  paint();
  drawingChanged();
});

pad.addEventListener('pointermove', (event) => {
  if (!drawing) return;
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
  for (const each of events.length ? events : [event]) drawing.push(point(each));
  paint();
  drawingChanged();
});

function endStroke() {
  if (!drawing) return;
  drawing = null;
  drawingChanged();
}
pad.addEventListener('pointerup', endStroke);
pad.addEventListener('pointercancel', endStroke);

document.getElementById('undo').addEventListener('click', () => {
  generation++;
  strokes.pop();
  paint();
  drawingChanged();
});

document.getElementById('clear').addEventListener('click', () => {
  generation++;
  strokes.length = 0;
  paint();
  drawingChanged();
});

function drawingChanged() {
  showPhoto(null);
  if (!strokes.length) {
    changed = false;
    showReading(null);
    settle();
    return;
  }
  changed = true;
  if (!drawingInFlight) sendDrawing();
}

function sendDrawing() {
  changed = false;
  drawingInFlight = true;
  pending++;
  pad.toBlob(async (blob) => {
    await read(blob, 'image/png', true);
    drawingInFlight = false;
    pending--;
    if (changed && strokes.length) sendDrawing();
    else settle();
  }, 'image/png');
}

// POST the picture; show the reading (or the server's error), unless the
// drawing was cleared, undone or replaced by a photo meanwhile.
async function read(blob, type, isDrawing) {
  const sentAt = generation;
  let reply = null;
  let error = null;
  try {
    let response;
    try {
      response = await fetch('/api/predict', {
        method: 'POST',
        headers: {'Content-Type': type},
        body: blob,
      });
    } catch {
      throw new Error('cannot reach the server: is main.py --mode=serve still running?');
    }
    reply = await response.json();
    if (!response.ok) throw new Error(reply.error || response.statusText);
  } catch (failure) {
    reply = null;
    error = String(failure.message || failure);
  }
  if (sentAt !== generation) return;
  readings++;
  sentBlob = isDrawing && !error ? blob : null;
  showReading(reply);
  if (error) showWarnings([], error);
}

function settle() {
  if (pending) return;
  const done = waiting.filter(([after]) => readings >= after);
  waiting = waiting.filter(([after]) => readings < after);
  for (const [, resolve] of done) resolve(lastReading);
}

// The bars, built once: one per class.
const bars = document.getElementById('bars');
function buildBars(count) {
  bars.textContent = '';
  for (let digit = 0; digit < count; digit++) {
    const item = document.createElement('li');
    item.dataset.digit = digit;
    item.innerHTML =
      '<span class="value"></span><span class="track"><span class="bar"></span></span>' +
      `<span class="digit">${digit}</span>`;
    bars.append(item);
  }
}

let lastReading = null;
function showReading(reply) {
  lastReading = reply;
  const probabilities = reply && reply.probabilities;
  const label = document.getElementById('label');
  const probability = document.getElementById('probability');
  label.textContent = reply && reply.label !== null ? String(reply.label) : '–';
  probability.textContent = !reply
    ? 'draw a digit'
    : reply.label === null
      ? 'no digit to see'
      : `${percent(reply.probability)} sure`;
  for (const item of bars.children) {
    const digit = Number(item.dataset.digit);
    const value = probabilities ? probabilities[digit] : null;
    item.dataset.probability = value === null ? '' : String(value);
    item.classList.toggle('best', reply !== null && reply.label === digit);
    item.querySelector('.value').textContent = value === null ? '' : percent(value);
    item.querySelector('.bar').style.height = `${value === null ? 0 : 100 * value}%`;
  }
  showSeen(reply ? reply.image : null);
  showWarnings(reply ? reply.warnings : [], null);
}

function percent(value) {
  return `${(100 * value).toFixed(1)}%`;
}

// The 28x28 input of the network, white ink on black as in MNIST.
function showSeen(image) {
  const seen = document.getElementById('seen');
  const seenContext = seen.getContext('2d');
  const pixels = seenContext.createImageData(seen.width, seen.height);
  for (let row = 0; row < seen.height; row++) {
    for (let col = 0; col < seen.width; col++) {
      const tone = image ? Math.round(255 * image[row][col]) : 0;
      const at = 4 * (row * seen.width + col);
      pixels.data.set([tone, tone, tone, 255], at);
    }
  }
  seenContext.putImageData(pixels, 0, 0);
}

function showWarnings(warnings, error) {
  const list = document.getElementById('warnings');
  list.textContent = '';
  for (const text of warnings || []) {
    const item = document.createElement('li');
    item.textContent = text;
    list.append(item);
  }
  if (error) {
    const item = document.createElement('li');
    item.className = 'error';
    item.textContent = error;
    list.append(item);
  }
}

// A photo goes through the same preprocessing as a drawing.
const photo = document.getElementById('photo');
let photoURL = null;
function showPhoto(file) {
  const figure = document.getElementById('photo-figure');
  if (photoURL) URL.revokeObjectURL(photoURL);
  photoURL = file ? URL.createObjectURL(file) : null;
  figure.hidden = !file;
  if (file) {
    document.getElementById('photo-preview').src = photoURL;
    document.getElementById('photo-name').textContent = file.name;
  }
}

photo.addEventListener('change', async () => {
  const file = photo.files[0];
  photo.value = '';
  if (!file) return;
  generation++;
  strokes.length = 0;
  paint();
  changed = false;
  showPhoto(file);
  pending++;
  await read(file, file.type || 'application/octet-stream', false);
  pending--;
  settle();
});

async function showModel() {
  const name = document.getElementById('model-name');
  try {
    const response = await fetch('/api/model');
    const card = await response.json();
    if (!response.ok) throw new Error(card.error || response.statusText);
    buildBars(card.layers[card.layers.length - 1]);
    const accuracy =
      card.test_accuracy === null ? '' : `, test accuracy ${card.test_accuracy.toFixed(4)}`;
    name.textContent = `${card.name}: a ${card.layers.join('-')} network${accuracy}`;
    const rows = [
      ['workdir', card.workdir],
      ['params', card.params],
      ['test accuracy', card.test_accuracy],
      ['validation accuracy', card.val_accuracy],
      ['steps trained', card.steps == null ? null : String(card.steps)],
    ];
    const list = document.getElementById('card');
    for (const [key, value] of rows) {
      const term = document.createElement('dt');
      term.textContent = key;
      const detail = document.createElement('dd');
      detail.textContent =
        value === null || value === undefined
          ? 'not recorded'
          : typeof value === 'number' ? value.toFixed(4) : String(value);
      list.append(term, detail);
    }
    const table = document.getElementById('options');
    for (const [key, value] of card.options) {
      const row = table.insertRow();
      row.insertCell().textContent = key;
      row.insertCell().textContent = String(value);
    }
    document.getElementById('config').textContent = JSON.stringify(card.config, null, 2);
  } catch (error) {
    buildBars(10);
    name.textContent = `cannot read the model: ${error.message || error}`;
  }
  showReading(null);
  modelShown();
}

let modelShown;
const modelReady = new Promise((resolve) => {
  modelShown = resolve;
});

window.digitPage = {
  // Resolves with the reading shown once nothing is pending (and at least
  // `after` readings have been shown).
  settled(after = 0) {
    return modelReady.then(
      () =>
        new Promise((resolve) => {
          waiting.push([after, resolve]);
          settle();
        }),
    );
  },
  get readings() {
    return readings;
  },
  // The PNG of the drawing whose reading is shown, base64.
  sentPNG() {
    if (!sentBlob) return Promise.resolve(null);
    return new Promise((resolve) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result.split(',')[1]);
      reader.readAsDataURL(sentBlob);
    });
  },
};

paint();
showModel();
