// The tracker list beside the map: every tracker the viewer may see, found by
// name or id as one types, filtered by status with counts per status, each
// row ticking its last-seen age. The rows are virtual: only those in view
// (and a margin, and the keyboard's active row) exist in the page, so 10,000
// trackers cost what 30 do. A listbox with aria-activedescendant: arrows move,
// Enter selects through the shared Selection. The state lives in roster.js.

import { formatAge } from "./ages.js";
import { ALL, Roster } from "./roster.js";
import { STATUS } from "./status.js";
import { formatSpeed, toggle } from "./ui.js";

const PAGE_SIZE = 500;
const MAX_PARALLEL = 3;
/** At most this many pages (100,000 trackers) are read, whatever the server says. */
const MAX_PAGES = 200;
/**
 * The list is read again at most this often, and at least twice per TRACKING_ONLINE_SECONDS:
 * a tracker that keeps reporting off the live map never reads stale between two reads.
 */
const REFRESH_MAX_MS = 60000;
const RETRY_MS = 15000;
const TICK_MS = 1000;
/** Rows made beyond those in view, above and below, so a quick scroll shows no gap. */
const MARGIN_ROWS = 6;

/**
 * Every tracker of GET /api/trackers: page 1, then the other pages a few at a time.
 * A tracker that moves between pages while they are read may be missed or read twice
 * (the Roster keeps the first); the next refresh sets that right. Whatever the answers
 * say, at most `maxPages` pages are read, and none after a short page (the last).
 */
export async function fetchAllTrackers(
  url,
  { pageSize = PAGE_SIZE, parallel = MAX_PARALLEL, maxPages = MAX_PAGES } = {},
) {
  const pageOf = async (page) => {
    const query = new URLSearchParams({ page: String(page), page_size: String(pageSize) });
    const response = await fetch(`${url}?${query}`, {
      headers: { Accept: "application/json" },
      credentials: "same-origin",
    });
    // A page past the last: trackers went while the pages were read, and those there were are read.
    if (response.status === 400 && page > 1) return { pages: page - 1, trackers: [] };
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const body = await response.json();
    const trackers = Array.isArray(body?.trackers) ? body.trackers : [];
    const pages = Number.isInteger(body?.pages) && trackers.length >= pageSize ? body.pages : page;
    return { pages, trackers };
  };
  const first = await pageOf(1);
  const pages = [first.trackers];
  let last = Math.min(first.pages, maxPages);
  let next = 2;
  const worker = async () => {
    while (next <= last) {
      const page = next++;
      const answer = await pageOf(page);
      pages[page - 1] = answer.trackers;
      if (answer.pages <= page) last = Math.min(last, page);
    }
  };
  await Promise.all(Array.from({ length: Math.max(0, Math.min(parallel, last - 1)) }, worker));
  return pages.slice(0, last).flat();
}

/** One row element and what it shows, so a tick changes only the text that changed. */
class Row {
  constructor() {
    this.element = document.createElement("div");
    this.element.className = "tracker-row";
    this.element.setAttribute("role", "option");
    this.name = document.createElement("span");
    this.name.className = "tracker-row-name";
    this.speed = document.createElement("span");
    this.speed.className = "tracker-row-speed";
    this.status = document.createElement("span");
    this.status.className = "tracker-row-status";
    this.age = document.createElement("span");
    this.age.className = "tracker-row-age";
    const line = document.createElement("span");
    line.className = "tracker-row-line";
    line.append(this.status, this.age);
    this.element.append(this.name, this.speed, line);
    this.id = null;
    this.index = -1;
    this.count = -1;
    this.label = "";
    this.texts = new Map();
  }

  /** Set a part's text if it changed. */
  set(part, text) {
    if (this.texts.get(part) === text) return;
    this.texts.set(part, text);
    this[part].textContent = text;
  }
}

export class TrackerList extends EventTarget {
  #root;
  #url;
  #labels;
  #selection;
  #roster;
  #search;
  #filter;
  #total;
  #note;
  #empty;
  #listbox;
  #space;
  #rowHeight = 0;
  /** @type {Map<string, Row>} rows in the page, by tracker id */
  #rows = new Map();
  /** @type {Row[]} rows out of the page, for reuse */
  #spare = [];
  /** The keyboard's active tracker (aria-activedescendant), by id, so a refresh keeps it. */
  #activeId = null;
  #open = true;
  #loaded = false;
  #renderQueued = false;
  #refreshTimer = null;
  #refreshMs;
  /** A refresh fell due while the panel was closed or the page hidden: it runs when they open. */
  #refreshDue = false;
  #filterInputs = new Map();

  /**
   * Dispatches "toggle" when the panel opens or closes (the map then resizes).
   * @param {object} options
   * @param {HTMLElement} options.panel   the side panel (aside#side-panel) with its toggle button
   * @param {string} options.url          GET /api/trackers (the page's config)
   * @param {{onlineSeconds: number, offlineSeconds: number, labels: Record<string, string>}} options.statusRule
   * @param {import("./selection.js").Selection} options.selection
   * @param {(id: string) => ({timestamp: number, speed: number|null}|undefined)} options.live
   *   the live map's tracker of that id, whose position may be newer than the list's
   */
  constructor({ panel, url, statusRule, selection, live }) {
    super();
    this.#root = panel;
    this.#url = url;
    this.#labels = statusRule.labels;
    this.#selection = selection;
    this.#roster = new Roster({ thresholds: statusRule, live });
    this.#refreshMs = Math.max(5000, Math.min(REFRESH_MAX_MS, (statusRule.onlineSeconds * 1000) / 2));
    this.#search = panel.querySelector(".tracker-search");
    this.#filter = panel.querySelector(".tracker-filter");
    this.#total = panel.querySelector(".tracker-list-total");
    this.#note = panel.querySelector(".tracker-list-note");
    this.#empty = panel.querySelector(".tracker-list-empty");
    this.#listbox = panel.querySelector(".tracker-rows");
    this.#space = panel.querySelector(".tracker-rows-space");
    this.#toggleButton.addEventListener("click", () => this.setOpen(!this.#open));
    this.#buildFilter();
    this.#bindSearch();
    this.#bindListbox();
    selection.addEventListener("change", (event) => this.#selectionChanged(event.detail));
    new ResizeObserver(() => this.#queueRender()).observe(this.#listbox);
    this.#open = panel.dataset.open !== "false";
    this.setOpen(this.#open, { force: true });
  }

  /** Load the list now and again every half minute or so while it shows; the rows tick every second. */
  start() {
    this.refresh();
    setInterval(() => {
      if (!document.hidden && this.#open) this.tick();
    }, TICK_MS);
    document.addEventListener("visibilitychange", () => this.#refreshIfDue());
    return this;
  }

  /** Read every tracker again; on failure the list keeps what it has and says so. */
  async refresh() {
    clearTimeout(this.#refreshTimer);
    this.#refreshDue = false;
    let wait = this.#refreshMs;
    const first = !this.#loaded;
    try {
      this.#roster.replace(await fetchAllTrackers(this.#url));
      this.#loaded = true;
      this.#setNote("");
    } catch (error) {
      wait = RETRY_MS;
      this.#setNote(`Could not load the trackers (${error.message}); trying again.`);
    }
    this.tick();
    if (first && this.#loaded) {
      // A tracker selected before the list came (a link's) is shown in it once it does.
      const selected = this.#indexOf(this.#selection.id);
      if (selected !== -1) this.#scrollTo(selected, { centre: true });
    }
    this.#refreshTimer = setTimeout(() => {
      this.#refreshDue = true;
      this.#refreshIfDue();
    }, wait);
  }

  #refreshIfDue() {
    if (this.#refreshDue && this.#open && !document.hidden) this.refresh();
  }

  /** Statuses and ages move on with time: work them out again and show them (in the next frame, or `now`). */
  tick({ now = false } = {}) {
    this.#roster.update(Date.now());
    this.#showCounts();
    if (now) this.render();
    else this.#queueRender();
  }

  get open() {
    return this.#open;
  }

  /** Open or close the panel (closed, its rows are not kept up to date). */
  setOpen(open, { force = false } = {}) {
    if (open === this.#open && !force) return;
    this.#open = open;
    this.#root.dataset.open = String(open);
    document.body.dataset.sidePanel = open ? "open" : "closed";
    this.#toggleButton.setAttribute("aria-expanded", String(open));
    this.#body.hidden = !open;
    if (open) {
      this.tick();
      // A tracker picked on the map while the panel was closed is in view when it opens.
      const selected = this.#indexOf(this.#selection.id);
      if (selected !== -1) this.#scrollTo(selected, { centre: true });
      this.#refreshIfDue();
    }
    this.dispatchEvent(new Event("toggle"));
  }

  /** For tests and the benchmark: what the list holds and shows. */
  state() {
    return {
      loaded: this.#loaded,
      total: this.#roster.size,
      shown: this.#roster.shown.length,
      counts: { ...this.#roster.counts },
      rowsInPage: this.#rows.size,
      activeId: this.#activeId,
    };
  }

  get #toggleButton() {
    return this.#root.querySelector(".side-panel-toggle");
  }

  get #body() {
    return this.#root.querySelector(".tracker-list");
  }

  // --- Search and filter ------------------------------------------------------

  #bindSearch() {
    this.#search.addEventListener("input", () => {
      this.#roster.setQuery(this.#search.value);
      this.#listbox.scrollTop = 0;
      this.#activeId = null;
      // The found trackers show in the frame after the keystroke.
      this.tick({ now: true });
    });
    this.#search.addEventListener("keydown", (event) => {
      if (event.key === "ArrowDown" && this.#roster.shown.length) {
        event.preventDefault();
        this.#listbox.focus();
      } else if (event.key === "Enter") {
        // Enter picks the active tracker, or the first found.
        event.preventDefault();
        const entry = this.#activeEntry() ?? this.#roster.shown[0];
        if (entry) this.#pick(entry.id);
      } else if (event.key === "Escape" && this.#search.value !== "") {
        event.preventDefault();
        this.#search.value = "";
        this.#search.dispatchEvent(new Event("input"));
      }
    });
  }

  #buildFilter() {
    const choices = [ALL, STATUS.online, STATUS.stale, STATUS.offline, STATUS.never];
    for (const status of choices) {
      const label = document.createElement("label");
      label.className = "tracker-filter-choice";
      label.dataset.status = status;
      const input = document.createElement("input");
      input.type = "radio";
      input.name = "tracker-status";
      input.value = status;
      input.checked = status === ALL;
      const word = document.createElement("span");
      word.textContent = status === ALL ? "All" : this.#labels[status];
      const count = document.createElement("span");
      count.className = "tracker-filter-count";
      count.textContent = "0";
      label.append(input, word, count);
      this.#filter.append(label);
      this.#filterInputs.set(status, { input, count });
      input.addEventListener("change", () => {
        if (!input.checked) return;
        this.#roster.setFilter(status);
        this.#listbox.scrollTop = 0;
        this.#activeId = null;
        this.tick({ now: true });
      });
    }
  }

  #showCounts() {
    const { counts, matchCount, size } = this.#roster;
    const shown = this.#roster.shown.length;
    for (const [status, { count }] of this.#filterInputs) {
      const n = status === ALL ? matchCount : counts[status];
      const text = n.toLocaleString();
      if (count.textContent !== text) count.textContent = text;
    }
    const noun = size === 1 ? "tracker" : "trackers";
    let text;
    if (!this.#loaded) text = "Loading trackers…";
    else if (shown === size) text = `${size.toLocaleString()} ${noun}`;
    else text = `${shown.toLocaleString()} of ${size.toLocaleString()} ${noun}`;
    if (this.#total.textContent !== text) this.#total.textContent = text;
    toggle(this.#empty, this.#loaded && shown === 0);
  }

  #setNote(text) {
    this.#note.textContent = text;
    this.#note.hidden = text === "";
  }

  // --- Rows -------------------------------------------------------------------

  #queueRender() {
    if (this.#renderQueued) return;
    this.#renderQueued = true;
    requestAnimationFrame(() => {
      this.#renderQueued = false;
      this.render();
    });
  }

  /** Put the rows in view (and the active one) in the page, each showing its tracker now. */
  render() {
    if (!this.#open) return;
    const shown = this.#roster.shown;
    const height = this.#sizeSpace();
    this.#listbox.setAttribute("aria-busy", String(!this.#loaded));
    const top = this.#listbox.scrollTop;
    const first = Math.max(0, Math.floor(top / height) - MARGIN_ROWS);
    const last = Math.min(shown.length, Math.ceil((top + this.#listbox.clientHeight) / height) + MARGIN_ROWS);
    const wanted = new Map();
    for (let index = first; index < last; index += 1) wanted.set(shown[index].id, index);
    const active = this.#activeIndex();
    if (active !== -1) wanted.set(shown[active].id, active);
    else this.#activeId = null;

    for (const [id, row] of this.#rows) {
      if (wanted.has(id)) continue;
      row.element.remove();
      this.#rows.delete(id);
      this.#spare.push(row);
    }
    const now = Date.now();
    for (const [id, index] of wanted) {
      let row = this.#rows.get(id);
      if (!row) {
        row = this.#spare.pop() ?? new Row();
        this.#rows.set(id, row);
        this.#space.append(row.element);
      }
      this.#fill(row, shown[index], index, shown.length, now);
    }
    this.#spare.length = Math.min(this.#spare.length, 50);
    if (this.#activeId) this.#listbox.setAttribute("aria-activedescendant", rowId(this.#activeId));
    else this.#listbox.removeAttribute("aria-activedescendant");
  }

  #fill(row, entry, index, count, now) {
    const element = row.element;
    if (row.id !== entry.id) {
      row.id = entry.id;
      element.id = rowId(entry.id);
      element.dataset.id = entry.id;
      row.texts.clear();
      row.label = "";
    }
    if (row.index !== index) {
      row.index = index;
      element.style.transform = `translateY(${index * this.#measureRow()}px)`;
      element.setAttribute("aria-posinset", String(index + 1));
    }
    if (row.count !== count) {
      row.count = count;
      element.setAttribute("aria-setsize", String(count));
    }
    const status = this.#labels[entry.status] ?? entry.status;
    const age = entry.seenAt === null ? "" : formatAge(entry.seenAt, now);
    // A column of "unknown" would be noise: a dash says it, and the row's label says it in words.
    const speed = entry.seenAt === null ? "" : formatSpeed(entry.shownSpeed);
    const speedText = speed === formatSpeed(null) ? "–" : speed;
    row.set("name", entry.name);
    row.set("status", status);
    row.set("age", age);
    row.set("speed", speedText);
    // Read aloud as one sentence: the parts are spans that a screen reader would run together.
    const label = [entry.name, status, age, speed && `speed ${speed}`].filter(Boolean).join(", ");
    if (row.label !== label) {
      row.label = label;
      element.setAttribute("aria-label", label);
    }
    if (element.dataset.status !== entry.status) element.dataset.status = entry.status;
    const selected = String(entry.id === this.#selection.id);
    if (element.getAttribute("aria-selected") !== selected) element.setAttribute("aria-selected", selected);
    element.classList.toggle("active", entry.id === this.#activeId);
  }

  /** Make the scrolled space as tall as every row shown; the row height. */
  #sizeSpace() {
    const height = this.#measureRow();
    const space = `${this.#roster.shown.length * height}px`;
    if (this.#space.style.height !== space) this.#space.style.height = space;
    return height;
  }

  /** A row's height in pixels, from the style sheet (the rows are all one height). */
  #measureRow() {
    if (this.#rowHeight > 0) return this.#rowHeight;
    const probe = new Row();
    probe.element.style.visibility = "hidden";
    probe.name.textContent = "Tracker";
    this.#space.append(probe.element);
    const height = probe.element.getBoundingClientRect().height;
    probe.element.remove();
    // Hidden (the panel closed), the row has no height yet: guess, and measure again next time.
    if (height === 0) return 52;
    this.#rowHeight = height;
    return height;
  }

  // --- Keyboard, clicks and the selection --------------------------------------

  #bindListbox() {
    this.#listbox.addEventListener("scroll", () => this.#queueRender(), { passive: true });
    this.#listbox.addEventListener("click", (event) => {
      const row = event.target.closest(".tracker-row");
      if (row?.dataset.id) this.#pick(row.dataset.id);
    });
    this.#listbox.addEventListener("focus", () => {
      if (this.#activeIndex() !== -1 || this.#roster.shown.length === 0) return;
      const selected = this.#indexOf(this.#selection.id);
      this.#activate(selected === -1 ? Math.min(this.#firstInView(), this.#roster.shown.length - 1) : selected);
    });
    this.#listbox.addEventListener("keydown", (event) => this.#onKey(event));
  }

  #onKey(event) {
    const count = this.#roster.shown.length;
    if (event.altKey || event.ctrlKey || event.metaKey) return;
    const current = this.#activeIndex();
    const page = Math.max(1, Math.floor(this.#listbox.clientHeight / this.#measureRow()) - 1);
    const moves = {
      ArrowDown: current + 1,
      ArrowUp: current - 1,
      PageDown: current + page,
      PageUp: current - page,
      Home: 0,
      End: count - 1,
    };
    if (event.key in moves && count > 0) {
      event.preventDefault();
      if (event.key === "ArrowUp" && current <= 0) {
        this.#search.focus();
        return;
      }
      this.#activate(Math.min(count - 1, Math.max(0, moves[event.key])));
    } else if ((event.key === "Enter" || event.key === " ") && current !== -1) {
      event.preventDefault();
      this.#pick(this.#roster.shown[current].id);
    } else if (event.key.length === 1 && event.key !== " ") {
      // Typing on the list goes on in the search box.
      this.#search.focus();
    }
  }

  #pick(id) {
    this.#activeId = id;
    this.#selection.select(id, { reveal: true, source: "list" });
    this.#queueRender();
  }

  #activate(index) {
    this.#activeId = this.#roster.shown[index].id;
    this.#scrollTo(index);
    this.render();
  }

  #selectionChanged({ id, source }) {
    const index = this.#indexOf(id);
    if (index !== -1) {
      this.#activeId = id;
      if (source !== "list") this.#scrollTo(index, { centre: true });
    }
    this.#queueRender();
  }

  /** Scroll so row `index` is in view: just, or (centre) in the middle if it was out of view. */
  #scrollTo(index, { centre = false } = {}) {
    if (!this.#open) return;
    // The space may not have grown to the rows shown yet (that waits for a frame), and a scroll past its end stops short.
    const height = this.#sizeSpace();
    const top = index * height;
    const view = this.#listbox.clientHeight;
    const scrollTop = this.#listbox.scrollTop;
    if (top >= scrollTop && top + height <= scrollTop + view) return;
    if (centre) this.#listbox.scrollTop = top - (view - height) / 2;
    else this.#listbox.scrollTop = top < scrollTop ? top : top + height - view;
  }

  /** The first row wholly in view (focusing the list must not scroll it). */
  #firstInView() {
    return Math.ceil(this.#listbox.scrollTop / this.#measureRow());
  }

  #indexOf(id) {
    if (id === null) return -1;
    return this.#roster.shown.findIndex((entry) => entry.id === id);
  }

  #activeIndex() {
    return this.#indexOf(this.#activeId);
  }

  #activeEntry() {
    const index = this.#activeIndex();
    return index === -1 ? undefined : this.#roster.shown[index];
  }
}

function rowId(trackerId) {
  return `tracker-row-${trackerId}`;
}
