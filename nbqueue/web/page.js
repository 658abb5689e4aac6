// The review page (render.py): keeps itself up to date by polling api/state, and sends
// decisions to api/decide. Cards come as HTML the server escaped; a card already shown is
// never re-rendered (what someone types in it stays), only added or removed.
(() => {
  "use strict";
  const POLL_MS = 1000;
  const main = document.getElementById("nbq-queues");
  const none = document.getElementById("nbq-none");
  const banner = document.getElementById("nbq-banner");
  const xsrf = document.querySelector('meta[name="nbq-xsrf"]').content;
  let version = main.dataset.version;
  let skew = Number(main.dataset.now) * 1000 - Date.now(); // the server's clock minus ours

  function duration(seconds) { // as nbqueue.reviewing.duration_text
    const s = Math.floor(Math.max(seconds, 0));
    if (s < 60) return `${s}s`;
    let m = Math.floor(s / 60);
    if (m < 60) return `${m}m`;
    let h = Math.floor(m / 60);
    m %= 60;
    if (h < 24) return m ? `${h}h ${m}m` : `${h}h`;
    const d = Math.floor(h / 24);
    h %= 24;
    return h ? `${d}d ${h}h` : `${d}d`;
  }

  function tick() { // as render.age_html and Review.deadline_text
    const now = (Date.now() + skew) / 1000;
    for (const el of main.querySelectorAll("[data-since]")) {
      el.textContent = `created ${duration(now - Number(el.dataset.since))} ago`;
    }
    for (const el of main.querySelectorAll("[data-deadline]")) {
      const left = Number(el.dataset.deadline) - now;
      const overdue = left < 0 || el.dataset.overdue === "1";
      el.textContent = overdue ? `overdue by ${duration(-left)}`
                               : `${duration(left)} left (then ${el.dataset.then})`;
      el.classList.toggle("nbq-overdue", overdue);
    }
  }

  function element(html) {
    const t = document.createElement("template");
    t.innerHTML = html;
    return t.content.firstElementChild;
  }

  function apply(state) {
    version = state.version;
    const sections = new Map();
    let before = null;
    for (const q of state.queues) {
      let section = document.getElementById(`nbq-q-${q.id}`);
      if (!section) {
        section = document.createElement("section");
        section.className = "nbq-queue";
        section.id = `nbq-q-${q.id}`;
        section.dataset.queue = q.id;
        section.append(element(q.head));
        section.dataset.head = q.head;
        const cards = document.createElement("div");
        cards.className = "nbq-cards";
        section.append(cards);
        if (before) before.after(section); else main.prepend(section);
      } else if (section.dataset.head !== q.head) {
        section.querySelector(".nbq-queue-head").replaceWith(element(q.head));
        section.dataset.head = q.head;
      }
      sections.set(section.id, true);
      before = section;
      const box = section.querySelector(".nbq-cards");
      const keys = new Set(q.cards.map((c) => c.key));
      for (const card of [...box.children]) {
        if (!keys.has(card.dataset.key)) card.remove(); // decided, here or elsewhere
      }
      let after = null;
      for (const c of q.cards) {
        let card = [...box.children].find((el) => el.dataset.key === c.key);
        if (!card) {
          card = element(c.html);
          if (after) after.after(card); else box.prepend(card);
        }
        after = card;
      }
    }
    for (const section of [...main.querySelectorAll("section.nbq-queue")]) {
      if (!sections.has(section.id)) section.remove();
    }
    none.classList.toggle("nbq-show", state.queues.length === 0);
    tick();
  }

  function say(text) { banner.textContent = text; }

  async function poll() {
    if (document.hidden) { // a tab in the background asks nothing; it catches up when shown
      setTimeout(poll, POLL_MS);
      return;
    }
    try {
      const only = main.dataset.only ? `&queue=${encodeURIComponent(main.dataset.only)}` : "";
      const response = await fetch(`api/state?since=${encodeURIComponent(version)}${only}`,
                                   { credentials: "same-origin", cache: "no-store" });
      if (response.status === 401 || response.status === 403) {
        say("Not signed in any more: open the page again with its token.");
      } else if (!response.ok) {
        say(`The server answered ${response.status}; retrying.`);
      } else {
        const state = await response.json();
        skew = state.now * 1000 - Date.now();
        if (state.version !== version) apply(state);
        say("");
      }
    } catch (err) {
      say("The server does not answer; retrying.");
    }
    setTimeout(poll, POLL_MS);
  }

  async function decide(button) {
    const card = button.closest(".nbq-card");
    const message = card.querySelector(".nbq-message");
    const values = {};
    for (const input of card.querySelectorAll("[data-field]")) {
      values[input.dataset.field] = input.type === "checkbox" ? input.checked : input.value;
    }
    for (const el of card.querySelectorAll(".nbq-error")) el.textContent = "";
    for (const el of card.querySelectorAll(".nbq-invalid")) el.classList.remove("nbq-invalid");
    const buttons = card.querySelectorAll("button[data-action]");
    buttons.forEach((b) => { b.disabled = true; });
    message.classList.remove("nbq-bad");
    message.textContent = "…";
    let response, body = {};
    try {
      response = await fetch("api/decide", {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-XSRFToken": xsrf },
        body: JSON.stringify({ queue: card.dataset.queue, gate: card.dataset.gate,
                               action: button.dataset.action,
                               comment: card.querySelector(".nbq-comment").value, values }),
      });
      try { body = await response.json(); } catch (err) { body = {}; }
    } catch (err) {
      response = null;
    }
    if (response && response.ok) {
      card.classList.add("nbq-decided");
      message.textContent = body.message || "Done.";
      return; // the next poll removes the card
    }
    for (const [name, text] of Object.entries(body.errors || {})) {
      const slot = [...card.querySelectorAll(".nbq-error")].find((el) => el.dataset.errorFor === name);
      if (slot) { slot.textContent = text; slot.parentElement.classList.add("nbq-invalid"); }
    }
    message.classList.add("nbq-bad");
    message.textContent = body.message ||
      (response ? `The server answered ${response.status}: nothing was changed.`
                : "The server does not answer: nothing was changed.");
    buttons.forEach((b) => { b.disabled = false; });
  }

  main.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (button && !button.disabled) decide(button);
  });
  main.addEventListener("submit", (event) => event.preventDefault());
  main.addEventListener("input", (event) => { // an answer being corrected: its error goes
    const box = event.target.closest(".nbq-field");
    if (!box || !box.classList.contains("nbq-invalid")) return;
    box.classList.remove("nbq-invalid");
    box.querySelector(".nbq-error").textContent = "";
    const card = box.closest(".nbq-card");
    if (!card.querySelector(".nbq-invalid")) card.querySelector(".nbq-message").textContent = "";
  });
  setInterval(tick, 1000);
  setTimeout(poll, POLL_MS);
})();
