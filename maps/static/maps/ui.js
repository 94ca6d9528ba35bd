// The page's small controls: connection badge, zoom hint and tooltip. Built with textContent and createElement only; no HTML from data.

const STATUS_TEXT = {
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
  disconnected: "Disconnected",
};

/** The connection badge: state (announced politely), detail, and the tracker count (not announced). */
export function statusBadge(root) {
  const text = root.querySelector("[data-status-text]");
  const detail = root.querySelector("[data-status-detail]");
  const count = root.querySelector("[data-status-count]");
  let lastCount = -1;
  let replaying = false;
  const showState = () => {
    text.textContent = replaying ? "Replay" : (STATUS_TEXT[root.dataset.state] ?? root.dataset.state);
  };
  return {
    setState(state, message = "") {
      root.dataset.state = state;
      showState();
      detail.textContent = message;
      detail.hidden = message === "";
    },
    /** While a replay is open the badge says so (its count is of the trackers replayed), live again after. */
    setReplay(on) {
      if (on === replaying) return;
      replaying = on;
      if (on) root.dataset.replay = "on";
      else delete root.dataset.replay;
      showState();
    },
    setDetail(message) {
      detail.textContent = message;
      detail.hidden = message === "";
    },
    setCount(n) {
      if (n === lastCount) return;
      lastCount = n;
      count.textContent = `${n.toLocaleString()} ${n === 1 ? "tracker" : "trackers"}`;
    },
  };
}

export function toggle(element, visible) {
  element.hidden = !visible;
}

/** A tooltip placed next to a point of `container`, kept inside it. */
export function tooltip(element, container) {
  return {
    get visible() {
      return !element.hidden;
    },
    /**
     * @param {{x: number, y: number}} point  container pixel
     * @param {string} title
     * @param {Array<[string, string]>} rows  label, value
     */
    show(point, title, rows) {
      const heading = document.createElement("strong");
      heading.className = "tooltip-title";
      heading.textContent = title;
      const list = document.createElement("dl");
      for (const [label, value] of rows) {
        const term = document.createElement("dt");
        term.textContent = label;
        const description = document.createElement("dd");
        description.textContent = value;
        list.append(term, description);
      }
      element.replaceChildren(heading, list);
      element.hidden = false;
      const gap = 14;
      const { width, height } = element.getBoundingClientRect();
      const box = container.getBoundingClientRect();
      const left = point.x + gap + width > box.width ? point.x - gap - width : point.x + gap;
      const top = point.y + gap + height > box.height ? point.y - gap - height : point.y + gap;
      element.style.transform = `translate(${Math.max(4, left)}px, ${Math.max(4, top)}px)`;
    },
    hide() {
      element.hidden = true;
    },
  };
}

export function formatClock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

export function formatSpeed(kmh) {
  if (kmh === null || kmh === undefined || !Number.isFinite(kmh)) return "unknown";
  return `${kmh < 10 ? kmh.toFixed(1) : Math.round(kmh)} km/h`;
}
