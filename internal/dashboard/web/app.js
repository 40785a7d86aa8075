// The dashboard's live updates: each server-sent event is a snapshot of
// the whole state, drawn with textContent only, so that nothing a client
// sent (its name, disk, failure message) is ever read as HTML.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);

  function bytes(n) {
    if (!(n > 0)) return "0 B";
    const u = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + u[i];
  }

  function duration(s) {
    s = Math.round(s);
    if (!(s > 0)) return "";
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    if (h > 0) return h + " h " + m + " min";
    if (m > 0) return m + " min " + r + " s";
    return r + " s";
  }

  function ago(now, t) {
    const d = (Date.parse(now) - Date.parse(t)) / 1000;
    if (!isFinite(d)) return "";
    return Math.max(0, Math.round(d)) + " s ago";
  }

  function set(id, text) { $(id).textContent = text; }

  const labels = ["Name", "MAC", "Address", "Disk", "State", "Progress", "Rate", "ETA", "Last seen", "Reason"];

  function newRow() {
    const tr = document.createElement("tr");
    for (const l of labels) {
      const td = document.createElement("td");
      td.dataset.label = l;
      tr.appendChild(td);
    }
    const c = tr.children;
    c[0].className = "name";
    c[1].className = c[2].className = "mono";
    c[4].className = "state";
    c[5].className = "progress";
    const bar = document.createElement("progress");
    bar.max = 100;
    const pct = document.createElement("span");
    pct.className = "pct";
    c[5].append(bar, " ", pct);
    c[6].className = c[7].className = c[8].className = "num";
    c[9].className = "reason";
    return tr;
  }

  function fill(tr, cl, now) {
    const failed = cl.state === "failed" || cl.state === "lost";
    tr.className = "state-" + cl.state + (failed ? " failed" : "");
    tr.dataset.id = cl.id;
    const c = tr.children;
    c[0].textContent = cl.name || "(no name)";
    c[1].textContent = cl.mac;
    c[2].textContent = cl.addr;
    c[3].textContent = cl.disk;
    c[4].textContent = cl.state;
    c[5].querySelector("progress").value = cl.percent;
    c[5].querySelector(".pct").textContent = cl.percent + "%";
    c[6].textContent = cl.rate > 0 ? bytes(cl.rate) + "/s" : "";
    c[7].textContent = duration(cl.eta_seconds);
    c[8].textContent = ago(now, cl.last_seen);
    c[9].textContent = cl.message;
  }

  function draw(s) {
    const sum = $("summary");
    sum.className = "summary " + s.summary.level;
    sum.textContent = s.summary.text;
    document.title = s.summary.text + " · asr server";

    const im = s.image;
    set("im-name", im.name);
    set("im-size", bytes(im.size) + " disk, " + bytes(im.stored) + " file, " + im.chunks + " chunks");
    set("im-digest", im.digest);
    set("im-signer", im.signers.length ? "by " + im.signers.join(", ") : "unsigned");
    const st = s.stream;
    set("st-rate", (st.rate > 0 ? bytes(st.rate) + "/s now, " : "") + bytes(im.rate) + "/s configured");
    set("st-pass", st.pass === 0 ? "not started (starts when a client joins)" : String(st.pass) + " (" + st.passes_done + " complete)");
    set("st-listening", String(st.listening));
    set("st-sent", bytes(st.bytes_sent) + " in " + st.packets_sent + " packets, " + st.repair_chunks + " chunks by repair");

    const body = $("clients").tBodies[0];
    const old = new Map();
    for (const tr of Array.from(body.rows)) {
      if (tr.dataset.id) old.set(tr.dataset.id, tr);
      tr.remove();
    }
    if (s.clients.length === 0) {
      const tr = document.createElement("tr");
      tr.className = "empty";
      const td = document.createElement("td");
      td.colSpan = labels.length;
      td.textContent = "No client yet: machines appear here when they connect.";
      tr.appendChild(td);
      body.appendChild(tr);
    }
    for (const cl of s.clients) {
      let tr = old.get(String(cl.id));
      if (!tr || tr.children.length !== labels.length || !tr.querySelector(".pct")) tr = newRow();
      fill(tr, cl, s.time);
      body.appendChild(tr);
    }
    const f = Object.entries(s.forgotten || {}).filter(([, n]) => n > 0);
    set("forgotten", f.length ? "Older clients no longer listed: " + f.map(([k, n]) => n + " " + k).join(", ") : "");
  }

  const conn = $("conn");
  if (!window.EventSource) {
    conn.textContent = "live updates: not supported by this browser (reload to refresh)";
    return;
  }
  const es = new EventSource("events");
  es.addEventListener("snapshot", (e) => {
    conn.className = "conn";
    conn.textContent = "live · " + new Date().toLocaleTimeString();
    draw(JSON.parse(e.data));
  });
  es.onerror = () => {
    conn.className = "conn down";
    conn.textContent = "live updates lost: retrying";
  };
})();
