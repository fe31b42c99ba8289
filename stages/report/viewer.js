/* bddn cortex viewer: one fit's per-vertex maps on the fsaverage inflated and flat surfaces.
 *
 * Everything the page needs is inside it: the data (a JSON block of base64 typed arrays written
 * by stages/report/viewer.py) and this script, drawn with WebGL 2 alone, so the page makes no
 * request of any kind. Picking is done on the CPU against the projected triangles, so pointing
 * at a vertex reads exactly that vertex's row of the fit's table.
 */
(function () {
  "use strict";

  var DATA = JSON.parse(document.getElementById("viewer-data").textContent);
  var TYPES = { f32: Float32Array, i32: Int32Array, u32: Uint32Array, u16: Uint16Array, u8: Uint8Array };
  var HEMIS = ["lh", "rh"];

  /* An array of the page: base64 of its zlib-deflated bytes, shuffled by byte position (all first
   * bytes, then all second bytes...), which lets deflate find the repeated exponent bytes of floats. */
  function unpack(entry) {
    var text = atob(entry.b64);
    var packed = new Uint8Array(text.length);
    for (var i = 0; i < text.length; i++) packed[i] = text.charCodeAt(i);
    var stream = new Blob([packed]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Response(stream).arrayBuffer().then(function (buffer) {
      var shuffled = new Uint8Array(buffer), Type = TYPES[entry.dtype], size = Type.BYTES_PER_ELEMENT;
      var n = shuffled.length / size, bytes = new Uint8Array(shuffled.length);
      for (var b = 0; b < size; b++) for (var k = 0; k < n; k++) bytes[k * size + b] = shuffled[b * n + k];
      return new Type(bytes.buffer);
    });
  }

  /* Replace every packed array inside `node` by its typed array. */
  function unpackAll(node) {
    var jobs = [];
    Object.keys(node).forEach(function (key) {
      var value = node[key];
      if (value && typeof value === "object" && typeof value.b64 === "string") {
        jobs.push(unpack(value).then(function (array) { node[key] = array; }));
      } else if (value && typeof value === "object") {
        jobs.push(unpackAll(value));
      }
    });
    return Promise.all(jobs);
  }

  function fail(error) {
    var message = document.getElementById("nogl");
    message.textContent = "The viewer could not start: " + error;
    message.hidden = false;
    window.bddnViewer = { ready: false, error: String(error) };
    throw error;
  }

  unpackAll(DATA).then(start).catch(fail);

  function start() {
  /* ---------- data ---------- */
  var arrays = {};
  Object.keys(DATA.arrays).forEach(function (name) { arrays[name] = DATA.arrays[name]; });
  var weights = DATA.weights;
  var nLayers = DATA.layer_names.length;
  var roiCodes = DATA.roi.codes;
  var luts = {};
  Object.keys(DATA.cmaps).forEach(function (name) { luts[name] = DATA.cmaps[name]; });
  var maps = DATA.maps.map(function (spec) {
    var out = Object.assign({}, spec);
    if (spec.rgba) out.rgbaData = spec.rgba;
    if (spec.values) out.valueData = arrays[spec.values];
    return out;
  });
  var hemis = {};
  HEMIS.forEach(function (h) {
    var src = DATA.hemis[h];
    hemis[h] = {
      n: src.n, rows: src.rows, grey: src.grey,
      surfaces: { inflated: { coords: src.inflated, faces: src.inflated_faces, edges: src.inflated_roi_edges },
                  flat: { coords: src.flat, faces: src.flat_faces, edges: src.flat_roi_edges } },
      colours: new Uint8Array(src.n * 3),
    };
  });
  var thresholdValues = DATA.threshold ? arrays[DATA.threshold.values] : null;

  /* ---------- state ---------- */
  var state = { surface: "inflated", view: "lateral", map: maps[0].name, rois: true, cut: null,
                rot: [1, 0, 0, 0, 1, 0, 0, 0, 1], scale: 1, centre: [0, 0], pinned: null, hover: null };
  var timings = { switch_ms: [], pick_ms: [], draw_ms: [] };

  /* ---------- small matrix helpers (3x3 row-major) ---------- */
  function mul3(a, b) {
    var out = new Array(9);
    for (var r = 0; r < 3; r++) for (var c = 0; c < 3; c++)
      out[3 * r + c] = a[3 * r] * b[c] + a[3 * r + 1] * b[3 + c] + a[3 * r + 2] * b[6 + c];
    return out;
  }
  function apply3(m, v) {
    return [m[0] * v[0] + m[1] * v[1] + m[2] * v[2], m[3] * v[0] + m[4] * v[1] + m[5] * v[2],
            m[6] * v[0] + m[7] * v[1] + m[8] * v[2]];
  }
  function rotation(axis, angle) {
    var c = Math.cos(angle), s = Math.sin(angle);
    return axis === "x" ? [1, 0, 0, 0, c, -s, 0, s, c] : [c, 0, s, 0, 1, 0, -s, 0, c];
  }

  /* Model transform of one hemisphere: camera coordinates = M p + t (x right, y up, z towards the viewer). */
  function modelOf(h) {
    var layout = DATA.layouts[state.surface === "flat" ? "flat" : state.view];
    var part = layout.hemis[h];
    var rot = state.surface === "flat" ? [1, 0, 0, 0, 1, 0, 0, 0, 1] : state.rot;
    var m = mul3(rot, part.basis);
    var pivot = apply3(m, part.pivot);
    var offset = layout.split ? part.offset : apply3(rot, part.offset);
    return { m: m, t: [offset[0] - pivot[0], offset[1] - pivot[1], offset[2] - pivot[2]] };
  }

  /* ---------- WebGL ---------- */
  var canvas = document.getElementById("cortex");
  var gl = canvas.getContext("webgl2", { antialias: false, preserveDrawingBuffer: true });
  if (!gl) {
    document.getElementById("nogl").hidden = false;
    window.bddnViewer = { ready: false, webgl: false };
    return;
  }

  function compile(vertexSource, fragmentSource) {
    var program = gl.createProgram();
    [[gl.VERTEX_SHADER, vertexSource], [gl.FRAGMENT_SHADER, fragmentSource]].forEach(function (pair) {
      var shader = gl.createShader(pair[0]);
      gl.shaderSource(shader, pair[1]);
      gl.compileShader(shader);
      if (!gl.getShaderParameter(shader, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(shader));
      gl.attachShader(program, shader);
    });
    gl.linkProgram(program);
    if (!gl.getProgramParameter(program, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(program));
    return program;
  }

  var HEAD = "#version 300 es\nprecision highp float;\n";
  var surfaceProgram = compile(HEAD +
    "in vec3 position; in vec3 normal; in vec3 colour;\n" +
    "uniform mat3 model; uniform vec3 shift; uniform vec4 proj; uniform float lit;\n" +
    "out vec3 shade;\n" +
    "void main() {\n" +
    "  vec3 cam = model * position + shift;\n" +
    "  gl_Position = vec4((cam.x - proj.x) * proj.z, (cam.y - proj.y) * proj.w, -cam.z / 1000.0, 1.0);\n" +
    "  vec3 n = normalize(model * normal);\n" +
    "  shade = colour * mix(1.0, 0.45 + 0.55 * abs(n.z), lit);\n" +
    "}\n",
    HEAD + "in vec3 shade; out vec4 outColour; void main() { outColour = vec4(shade, 1.0); }\n");
  var lineProgram = compile(HEAD +
    "in vec3 position; uniform mat3 model; uniform vec3 shift; uniform vec4 proj;\n" +
    "void main() { vec3 cam = model * position + shift;\n" +
    "  gl_Position = vec4((cam.x - proj.x) * proj.z, (cam.y - proj.y) * proj.w, -cam.z / 1000.0 - 0.0005, 1.0); }\n",
    HEAD + "out vec4 outColour; void main() { outColour = vec4(0.0, 0.0, 0.0, 0.75); }\n");

  function buffer(target, data) {
    var b = gl.createBuffer();
    gl.bindBuffer(target, b);
    gl.bufferData(target, data, gl.STATIC_DRAW);
    return b;
  }

  function vertexNormals(coords, faces, n) {
    var normals = new Float32Array(n * 3);
    for (var f = 0; f < faces.length; f += 3) {
      var a = 3 * faces[f], b = 3 * faces[f + 1], c = 3 * faces[f + 2];
      var ux = coords[b] - coords[a], uy = coords[b + 1] - coords[a + 1], uz = coords[b + 2] - coords[a + 2];
      var vx = coords[c] - coords[a], vy = coords[c + 1] - coords[a + 1], vz = coords[c + 2] - coords[a + 2];
      var nx = uy * vz - uz * vy, ny = uz * vx - ux * vz, nz = ux * vy - uy * vx;
      [a, b, c].forEach(function (i) { normals[i] += nx; normals[i + 1] += ny; normals[i + 2] += nz; });
    }
    return normals;
  }

  var indexType = DATA.index_dtype === "u16" ? gl.UNSIGNED_SHORT : gl.UNSIGNED_INT;
  HEMIS.forEach(function (h) {
    var hemi = hemis[h];
    hemi.colourBuffer = buffer(gl.ARRAY_BUFFER, hemi.colours);
    ["inflated", "flat"].forEach(function (kind) {
      var surface = hemi.surfaces[kind];
      surface.positionBuffer = buffer(gl.ARRAY_BUFFER, surface.coords);
      var normals = kind === "flat" ? new Float32Array(hemi.n * 3).map(function (_, i) { return i % 3 === 2 ? 1 : 0; })
                                    : vertexNormals(surface.coords, surface.faces, hemi.n);
      surface.normalBuffer = buffer(gl.ARRAY_BUFFER, normals);
      surface.faceBuffer = buffer(gl.ELEMENT_ARRAY_BUFFER, surface.faces);
      surface.edgeBuffer = buffer(gl.ELEMENT_ARRAY_BUFFER, surface.edges);
    });
  });

  function attribute(program, name, buf, size, type, normalised) {
    var location = gl.getAttribLocation(program, name);
    if (location < 0) return;
    gl.bindBuffer(gl.ARRAY_BUFFER, buf);
    gl.enableVertexAttribArray(location);
    gl.vertexAttribPointer(location, size, type, normalised, 0, 0);
  }

  function resize() {
    var ratio = window.devicePixelRatio || 1;
    var width = Math.max(1, Math.round(canvas.clientWidth * ratio));
    var height = Math.max(1, Math.round(canvas.clientHeight * ratio));
    if (canvas.width !== width || canvas.height !== height) { canvas.width = width; canvas.height = height; }
  }

  function projection() {
    return [state.centre[0], state.centre[1], 2 * state.scale / canvas.clientWidth, 2 * state.scale / canvas.clientHeight];
  }

  function draw() {
    var start = performance.now();
    resize();
    gl.viewport(0, 0, canvas.width, canvas.height);
    gl.clearColor(1, 1, 1, 1);
    gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
    gl.enable(gl.DEPTH_TEST);
    gl.depthFunc(gl.LEQUAL);
    var proj = projection();
    HEMIS.forEach(function (h) {
      var hemi = hemis[h], surface = hemi.surfaces[state.surface], model = modelOf(h);
      var matrix = [model.m[0], model.m[3], model.m[6], model.m[1], model.m[4], model.m[7], model.m[2], model.m[5], model.m[8]];
      gl.useProgram(surfaceProgram);
      gl.uniformMatrix3fv(gl.getUniformLocation(surfaceProgram, "model"), false, matrix);
      gl.uniform3fv(gl.getUniformLocation(surfaceProgram, "shift"), model.t);
      gl.uniform4fv(gl.getUniformLocation(surfaceProgram, "proj"), proj);
      gl.uniform1f(gl.getUniformLocation(surfaceProgram, "lit"), state.surface === "flat" ? 0 : 1);
      attribute(surfaceProgram, "position", surface.positionBuffer, 3, gl.FLOAT, false);
      attribute(surfaceProgram, "normal", surface.normalBuffer, 3, gl.FLOAT, false);
      attribute(surfaceProgram, "colour", hemi.colourBuffer, 3, gl.UNSIGNED_BYTE, true);
      gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, surface.faceBuffer);
      gl.drawElements(gl.TRIANGLES, surface.faces.length, indexType, 0);
      if (state.rois && surface.edges.length) {
        gl.useProgram(lineProgram);
        gl.uniformMatrix3fv(gl.getUniformLocation(lineProgram, "model"), false, matrix);
        gl.uniform3fv(gl.getUniformLocation(lineProgram, "shift"), model.t);
        gl.uniform4fv(gl.getUniformLocation(lineProgram, "proj"), proj);
        for (var i = 0; i < 3; i++) gl.disableVertexAttribArray(i);
        attribute(lineProgram, "position", surface.positionBuffer, 3, gl.FLOAT, false);
        gl.enable(gl.BLEND);
        gl.blendFunc(gl.SRC_ALPHA, gl.ONE_MINUS_SRC_ALPHA);
        gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, surface.edgeBuffer);
        gl.drawElements(gl.LINES, surface.edges.length, indexType, 0);
        gl.disable(gl.BLEND);
      }
      for (var j = 0; j < 3; j++) gl.disableVertexAttribArray(j);
    });
    timings.draw_ms.push(performance.now() - start);
    placeMarker();
  }

  var pending = false;
  function requestDraw() {
    projected = null;
    if (pending) return;
    pending = true;
    requestAnimationFrame(function () { pending = false; draw(); });
  }

  /* Wait for the GPU (a one-pixel read) so timings include the rendering itself. */
  function finish() {
    var pixel = new Uint8Array(4);
    gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, pixel);
  }

  /* ---------- colours ---------- */
  function currentMap() {
    for (var i = 0; i < maps.length; i++) if (maps[i].name === state.map) return maps[i];
    return maps[0];
  }

  function weightValue(row, layer) { return weights[row * nLayers + layer]; }

  function recolour() {
    var map = currentMap();
    var lut = map.cmap ? luts[map.cmap] : null;
    var span = map.vmax - map.vmin || 1;
    HEMIS.forEach(function (h) {
      var hemi = hemis[h], out = hemi.colours, rows = hemi.rows, grey = hemi.grey;
      for (var v = 0; v < hemi.n; v++) {
        var row = rows[v], shown = row >= 0;
        if (shown && state.cut !== null && !(thresholdValues[row] >= state.cut)) shown = false;
        var r, g, b;
        if (shown && map.rgbaData) {
          shown = map.rgbaData[4 * row + 3] > 0;
          r = map.rgbaData[4 * row]; g = map.rgbaData[4 * row + 1]; b = map.rgbaData[4 * row + 2];
        } else if (shown) {
          var value = map.layer !== undefined ? weightValue(row, map.layer) : map.valueData[row];
          if (!isFinite(value)) shown = false;
          else {
            var k = 3 * Math.round(255 * Math.min(1, Math.max(0, (value - map.vmin) / span)));
            r = lut[k]; g = lut[k + 1]; b = lut[k + 2];
          }
        }
        if (!shown) r = g = b = grey[v];
        out[3 * v] = r; out[3 * v + 1] = g; out[3 * v + 2] = b;
      }
      gl.bindBuffer(gl.ARRAY_BUFFER, hemi.colourBuffer);
      gl.bufferSubData(gl.ARRAY_BUFFER, 0, out);
    });
  }

  /* ---------- camera ---------- */
  /* Frame the whole surface; on the flat sheets, the fit's vertices with a margin (as the static flatmaps). */
  function fitToView() {
    var low = [Infinity, Infinity], high = [-Infinity, -Infinity];
    var crop = state.surface === "flat" && DATA.n_shown > 0;
    HEMIS.forEach(function (h) {
      var coords = hemis[h].surfaces[state.surface].coords, model = modelOf(h), rows = hemis[h].rows;
      for (var i = 0; i < coords.length; i += 3) {
        if (crop && rows[i / 3] < 0) continue;
        var p = apply3(model.m, [coords[i], coords[i + 1], coords[i + 2]]);
        for (var a = 0; a < 2; a++) {
          var q = p[a] + model.t[a];
          if (q < low[a]) low[a] = q;
          if (q > high[a]) high[a] = q;
        }
      }
    });
    if (crop) {
      var margin = 0.25 * Math.max(high[0] - low[0], high[1] - low[1]);
      low = [low[0] - margin, low[1] - margin];
      high = [high[0] + margin, high[1] + margin];
    }
    state.centre = [(low[0] + high[0]) / 2, (low[1] + high[1]) / 2];
    state.scale = 0.94 * Math.min(canvas.clientWidth / (high[0] - low[0]), canvas.clientHeight / (high[1] - low[1]));
  }

  /* ---------- picking ---------- */
  var projected = null;
  function project() {
    var out = {};
    var proj = projection();
    var halfW = canvas.clientWidth / 2, halfH = canvas.clientHeight / 2;
    HEMIS.forEach(function (h) {
      var coords = hemis[h].surfaces[state.surface].coords, model = modelOf(h), m = model.m, t = model.t;
      var screen = new Float32Array(hemis[h].n * 3);
      for (var v = 0, i = 0; i < coords.length; v++, i += 3) {
        var x = m[0] * coords[i] + m[1] * coords[i + 1] + m[2] * coords[i + 2] + t[0];
        var y = m[3] * coords[i] + m[4] * coords[i + 1] + m[5] * coords[i + 2] + t[1];
        var z = m[6] * coords[i] + m[7] * coords[i + 1] + m[8] * coords[i + 2] + t[2];
        screen[3 * v] = halfW + (x - proj[0]) * proj[2] * halfW;
        screen[3 * v + 1] = halfH - (y - proj[1]) * proj[3] * halfH;
        screen[3 * v + 2] = z;
      }
      out[h] = screen;
    });
    return out;
  }

  /* The vertex under canvas point (px, py): the front-most triangle holding the point, then its nearest corner. */
  function pick(px, py) {
    if (!projected) projected = project();
    var best = null, bestDepth = -Infinity;
    HEMIS.forEach(function (h) {
      var s = projected[h], faces = hemis[h].surfaces[state.surface].faces;
      for (var f = 0; f < faces.length; f += 3) {
        var a = 3 * faces[f], b = 3 * faces[f + 1], c = 3 * faces[f + 2];
        var ax = s[a], ay = s[a + 1], bx = s[b], by = s[b + 1], cx = s[c], cy = s[c + 1];
        if ((px < ax && px < bx && px < cx) || (px > ax && px > bx && px > cx) ||
            (py < ay && py < by && py < cy) || (py > ay && py > by && py > cy)) continue;
        var det = (by - cy) * (ax - cx) + (cx - bx) * (ay - cy);
        if (det === 0) continue;
        var wa = ((by - cy) * (px - cx) + (cx - bx) * (py - cy)) / det;
        var wb = ((cy - ay) * (px - cx) + (ax - cx) * (py - cy)) / det;
        var wc = 1 - wa - wb;
        if (wa < -1e-6 || wb < -1e-6 || wc < -1e-6) continue;
        var depth = wa * s[a + 2] + wb * s[b + 2] + wc * s[c + 2];
        if (depth <= bestDepth) continue;
        bestDepth = depth;
        var corners = [[faces[f], ax, ay], [faces[f + 1], bx, by], [faces[f + 2], cx, cy]];
        corners.sort(function (p, q) {
          return (p[1] - px) * (p[1] - px) + (p[2] - py) * (p[2] - py) - (q[1] - px) * (q[1] - px) - (q[2] - py) * (q[2] - py);
        });
        best = { hemi: h, index: corners[0][0] };
      }
    });
    return best;
  }

  /* ---------- readout ---------- */
  var readout = document.getElementById("readout");
  function field(name) { return readout.querySelector('[data-field="' + name + '"]'); }
  function setField(name, text, value) {
    var el = field(name);
    if (!el) return;
    el.textContent = text;
    if (value === undefined) el.removeAttribute("data-value"); else el.setAttribute("data-value", String(value));
  }
  function format(value, digits) {
    if (value === undefined || value === null || !isFinite(value)) return "–";
    if (digits === "int") return String(Math.round(value));
    if (digits === "g") return Math.abs(value) < 1e-3 && value !== 0 ? value.toExponential(2) : value.toPrecision(3);
    return value.toFixed(digits);
  }

  var valueTable = document.getElementById("ro-values");
  DATA.readout.forEach(function (item) {
    var tr = document.createElement("tr"), label = document.createElement("td"), cell = document.createElement("td");
    label.textContent = item.label;
    cell.setAttribute("data-field", item.name);
    tr.appendChild(label); tr.appendChild(cell); valueTable.appendChild(tr);
  });

  function showVertex(target) {
    readout.hidden = !target;
    document.getElementById("ro-empty").hidden = !!target;
    if (!target) return;
    var hemi = hemis[target.hemi], row = hemi.rows[target.index];
    setField("hemisphere", target.hemi === "lh" ? "left (lh)" : "right (rh)", target.hemi);
    setField("fsaverage_index", String(target.index), target.index);
    var has = row >= 0;
    readout.querySelector(".ro-data").hidden = !has;
    readout.querySelector(".ro-nodata").hidden = has;
    readout.setAttribute("data-has-data", has ? "1" : "0");
    if (!has) { setField("roi", "–"); return; }
    setField("roi", DATA.roi.names[roiCodes[row]] || "none", DATA.roi.names[roiCodes[row]]);
    var vertex = arrays[DATA.columns.vertex][row];
    setField("vertex", String(vertex), vertex);
    drawBars(row);
    drawSpace(row);
    DATA.readout.forEach(function (item) {
      var value = arrays[item.values][row];
      setField(item.name, format(value, item.digits), value);
    });
  }

  function drawBars(row) {
    var svg = document.getElementById("ro-bars");
    var width = 300, height = 90, bar = width / nLayers, top = 0, arg = 0;
    for (var l = 0; l < nLayers; l++) { var w = weightValue(row, l); if (w > top) { top = w; arg = l; } }
    var parts = [];
    for (var i = 0; i < nLayers; i++) {
      var value = weightValue(row, i), h = Math.max(0, value) / Math.max(top, 1e-9) * (height - 26);
      var colour = "rgb(" + DATA.layer_hues[i].join(",") + ")";
      parts.push('<rect class="bar' + (i === arg ? " argmax" : "") + '" data-layer="' + i + '" data-value="' + String(value) +
                 '" x="' + (i * bar + 1).toFixed(1) + '" y="' + (height - 12 - h).toFixed(1) + '" width="' +
                 Math.max(1, bar - 2).toFixed(1) + '" height="' + h.toFixed(1) + '" fill="' + colour + '"><title>' +
                 escapeText(DATA.layer_names[i]) + ": " + value.toFixed(3) + "</title></rect>");
    }
    parts.push('<text x="' + Math.min(width - 40, Math.max(40, (arg + 0.5) * bar)).toFixed(1) + '" y="' + (height - 1) +
               '" text-anchor="middle">▲ ' + escapeText(DATA.layer_names[arg]) + "</text>");
    parts.push('<text x="0" y="10">max ' + top.toFixed(3) + " (bars scaled to it)</text>");
    svg.innerHTML = parts.join("");
    svg.setAttribute("data-argmax", String(arg));
  }

  function escapeText(text) {
    return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }

  function drawSpace(row) {
    var x = arrays[DATA.columns.space_x][row], y = arrays[DATA.columns.space_y][row];
    setField("space_x", format(x, 2), x);
    setField("space_y", format(y, 2), y);
    var c = document.getElementById("ro-space"), ctx = c.getContext("2d"), size = c.width;
    ctx.fillStyle = "#f3f3f3";
    ctx.fillRect(0, 0, size, size);
    ctx.strokeStyle = "#bbb";
    ctx.lineWidth = 1;
    var grid = DATA.grid || 1;
    for (var i = 0; i <= grid; i++) {
      var p = Math.round(i * (size - 1) / grid) + 0.5;
      ctx.beginPath(); ctx.moveTo(p, 0); ctx.lineTo(p, size); ctx.stroke();
      ctx.beginPath(); ctx.moveTo(0, p); ctx.lineTo(size, p); ctx.stroke();
    }
    if (!isFinite(x) || !isFinite(y)) return;
    ctx.fillStyle = "#d62728";
    ctx.beginPath();
    ctx.arc((x + 1) / 2 * size, (y + 1) / 2 * size, 4, 0, 2 * Math.PI);
    ctx.fill();
  }

  var marker = document.getElementById("marker");
  function placeMarker() {
    var target = state.pinned || state.hover;
    if (!target) { marker.hidden = true; return; }
    if (!projected) projected = project();
    var s = projected[target.hemi];
    marker.hidden = false;
    marker.style.left = (canvas.offsetLeft + s[3 * target.index] - 5) + "px";
    marker.style.top = (canvas.offsetTop + s[3 * target.index + 1] - 5) + "px";
    marker.classList.toggle("pinned", !!state.pinned);
  }

  function pointAt(event, pin) {
    var start = performance.now();
    var rect = canvas.getBoundingClientRect();
    var target = pick(event.clientX - rect.left, event.clientY - rect.top);
    if (pin) state.pinned = target;
    else state.hover = target;
    if (!state.pinned || pin) showVertex(target);
    placeMarker();
    timings.pick_ms.push(performance.now() - start);
  }

  /* ---------- legends ---------- */
  function drawLegend() {
    var map = currentMap();
    var c = document.getElementById("legend"), ctx = c.getContext("2d");
    ctx.clearRect(0, 0, c.width, c.height);
    ctx.fillStyle = "#222";
    ctx.font = "11px sans-serif";
    var text = document.getElementById("legend-text");
    if (map.legend === "layer" || map.legend === "space") {
      var image = DATA.legends[map.legend], pixels = image.rgb;
      var tile = document.createElement("canvas");
      tile.width = image.width; tile.height = image.height;
      var data = tile.getContext("2d").createImageData(image.width, image.height);
      for (var i = 0; i < image.width * image.height; i++) {
        data.data[4 * i] = pixels[3 * i]; data.data[4 * i + 1] = pixels[3 * i + 1];
        data.data[4 * i + 2] = pixels[3 * i + 2]; data.data[4 * i + 3] = 255;
      }
      tile.getContext("2d").putImageData(data, 0, 0);
      ctx.imageSmoothingEnabled = map.legend === "space";
      var w = map.legend === "layer" ? 200 : 80;
      ctx.drawImage(tile, 40, 4, w, 80);
      if (map.legend === "layer") {
        ctx.fillText("0", 30, 12); ctx.fillText("1", 30, 84);
        ctx.save(); ctx.translate(12, 70); ctx.rotate(-Math.PI / 2); ctx.fillText("entropy", 0, 0); ctx.restore();
        ctx.fillText("first layer", 40, 98); ctx.fillText("last", 40 + w - 24, 98);
        text.textContent = "hue: most-weighted layer; dark: undecided (high entropy)";
      } else {
        ctx.fillText("left", 40, 98); ctx.fillText("right", 90, 98); ctx.fillText("top", 8, 12); ctx.fillText("bottom", 0, 84);
        text.textContent = map.extent >= 1 ? "colour = selected image point" :
          "colour = selected image point (square spans the image centre ±" + map.extent + ")";
      }
    } else if (map.legend === "clusters") {
      text.textContent = "colour = channel cluster of the vertex's read-out";
    } else {
      var lut = luts[map.cmap];
      for (var x = 0; x < 240; x++) {
        var k = 3 * Math.round(255 * x / 239);
        ctx.fillStyle = "rgb(" + lut[k] + "," + lut[k + 1] + "," + lut[k + 2] + ")";
        ctx.fillRect(10 + x, 10, 1, 24);
      }
      ctx.fillStyle = "#222";
      ctx.fillText(format(map.vmin, "g"), 10, 50);
      var high = format(map.vmax, "g");
      ctx.fillText(high, 250 - ctx.measureText(high).width, 50);
      text.textContent = map.label || "";
    }
  }

  /* ---------- controls ---------- */
  function setMap(name) {
    var start = performance.now();
    state.map = name;
    select.value = name;
    recolour();
    drawLegend();
    draw();
    finish();
    var elapsed = performance.now() - start;
    timings.switch_ms.push(elapsed);
    return elapsed;
  }

  function setSurface(kind) {
    state.surface = kind;
    document.querySelectorAll("[data-surface]").forEach(function (b) { b.classList.toggle("on", b.dataset.surface === kind); });
    document.querySelectorAll("[data-view]").forEach(function (b) { b.disabled = kind === "flat"; });
    document.getElementById("caption").textContent = DATA.layouts[kind === "flat" ? "flat" : state.view].caption +
      (kind === "flat" ? "" : " (drag to turn)");
    fitToView();
    requestDraw();
  }

  function setView(view) {
    state.view = view;
    state.rot = [1, 0, 0, 0, 1, 0, 0, 0, 1];
    if (state.surface === "flat") state.surface = "inflated";
    setSurface(state.surface);
    document.querySelectorAll("[data-view]").forEach(function (b) { b.classList.toggle("on", b.dataset.view === view); });
  }

  var select = document.getElementById("map");
  var groups = {};
  maps.forEach(function (map) {
    if (!groups[map.group]) {
      groups[map.group] = document.createElement("optgroup");
      groups[map.group].label = map.group;
      select.appendChild(groups[map.group]);
    }
    var option = document.createElement("option");
    option.value = map.name;
    option.textContent = map.title;
    groups[map.group].appendChild(option);
  });
  select.addEventListener("change", function () { setMap(select.value); });
  document.querySelectorAll("[data-surface]").forEach(function (b) {
    b.addEventListener("click", function () { setSurface(b.dataset.surface); });
  });
  document.querySelectorAll("[data-view]").forEach(function (b) {
    b.addEventListener("click", function () { setView(b.dataset.view); });
  });
  document.getElementById("rois").addEventListener("change", function (e) { state.rois = e.target.checked; requestDraw(); });
  var slider = document.getElementById("cut");
  if (DATA.threshold) {
    slider.min = DATA.threshold.min; slider.max = DATA.threshold.max; slider.step = DATA.threshold.step;
    slider.value = DATA.threshold.min;
    slider.addEventListener("input", function () {
      var value = parseFloat(slider.value);
      state.cut = value > DATA.threshold.min ? value : null;
      document.getElementById("cut-value").textContent = state.cut === null ? "off" : value.toFixed(3);
      recolour();
      requestDraw();
    });
  } else {
    slider.disabled = true;
    document.getElementById("cut-value").textContent = "no R² in this table";
  }

  /* pointer: drag rotates (pans on the flat view, with shift or the right button), wheel zooms, hover reads, click pins */
  var drag = null;
  canvas.addEventListener("contextmenu", function (e) { e.preventDefault(); });
  canvas.addEventListener("pointerdown", function (e) {
    drag = { x: e.clientX, y: e.clientY, moved: false, pan: e.shiftKey || e.button === 2 || state.surface === "flat" };
    canvas.setPointerCapture(e.pointerId);
  });
  canvas.addEventListener("pointermove", function (e) {
    if (!drag) { pointAt(e, false); return; }
    var dx = e.clientX - drag.x, dy = e.clientY - drag.y;
    if (!drag.moved && Math.abs(dx) + Math.abs(dy) < 3) return;
    drag.moved = true;
    drag.x = e.clientX; drag.y = e.clientY;
    if (drag.pan) {
      state.centre = [state.centre[0] - dx / state.scale, state.centre[1] + dy / state.scale];
    } else {
      state.rot = mul3(rotation("x", dy * 0.01), mul3(rotation("y", dx * 0.01), state.rot));
    }
    requestDraw();
  });
  canvas.addEventListener("pointerup", function (e) {
    if (drag && !drag.moved) pointAt(e, true);
    drag = null;
  });
  canvas.addEventListener("pointerleave", function () { state.hover = null; if (!state.pinned) showVertex(null); placeMarker(); });
  canvas.addEventListener("wheel", function (e) {
    e.preventDefault();
    var rect = canvas.getBoundingClientRect();
    var px = e.clientX - rect.left - rect.width / 2, py = rect.height / 2 - (e.clientY - rect.top);
    var factor = Math.exp(-e.deltaY * 0.0015);
    state.centre = [state.centre[0] + px / state.scale * (1 - 1 / factor), state.centre[1] + py / state.scale * (1 - 1 / factor)];
    state.scale *= factor;
    requestDraw();
  }, { passive: false });
  window.addEventListener("resize", function () { fitToView(); requestDraw(); });

  /* ---------- start, and a small scripting surface (used by the tests and the benchmark) ---------- */
  setView("lateral");
  recolour();
  drawLegend();
  draw();
  finish();  // the first frame compiles the renderer's pipeline; pay for it while the page opens
  window.bddnViewer = {
    ready: true, webgl: true, timings: timings,
    maps: function () { return maps.map(function (m) { return m.name; }); },
    setMap: setMap, setSurface: setSurface, setView: setView,
    /* Canvas-relative CSS pixel position of a mesh vertex in the current view. */
    locate: function (hemi, index) {
      if (!projected) projected = project();
      return [projected[hemi][3 * index], projected[hemi][3 * index + 1], projected[hemi][3 * index + 2]];
    },
    /* Centre the view on a vertex at `zoom` times the current scale. */
    focus: function (hemi, index, zoom) {
      var model = modelOf(hemi), c = hemis[hemi].surfaces[state.surface].coords;
      var p = apply3(model.m, [c[3 * index], c[3 * index + 1], c[3 * index + 2]]);
      state.centre = [p[0] + model.t[0], p[1] + model.t[1]];
      state.scale *= zoom || 1;
      projected = null;
      draw();
      finish();
    },
    draw: function () { var s = performance.now(); draw(); finish(); return performance.now() - s; },
  };
  }
})();
