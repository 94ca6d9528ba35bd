// The SignalR connection to the tracking hub (docs/protocol.md §3): JSON hub protocol,
// automatic reconnect forever with capped backoff, and a first start that is
// retried too (automatic reconnect only covers a connection that once started).

const signalR = window.signalR;

export const STATUS = Object.freeze({
  connecting: "connecting",
  live: "live",
  reconnecting: "reconnecting",
  disconnected: "disconnected",
});

const START_RETRY_MS = 5000;
const RECONNECT_DELAYS_MS = [0, 2000, 5000, 10000, 20000];
const RECONNECT_MAX_MS = 30000;

/** Retry forever: 0, 2, 5, 10, 20, then every 30 s, with a little jitter so a fleet of browsers spreads out. */
const reconnectPolicy = {
  nextRetryDelayInMilliseconds({ previousRetryCount }) {
    const base = RECONNECT_DELAYS_MS[previousRetryCount] ?? RECONNECT_MAX_MS;
    return base === 0 ? 0 : Math.round(base * (0.8 + Math.random() * 0.4));
  },
};

/**
 * SignalR logs every failed attempt with console.error; while the server is
 * away that would repeat every few seconds. Say each distinct problem once a minute.
 */
function quietLogger() {
  const lastSaid = new Map();
  return {
    log(level, message) {
      if (level < signalR.LogLevel.Warning) return;
      const now = Date.now();
      if (now - (lastSaid.get(message) ?? -Infinity) < 60000) return;
      lastSaid.set(message, now);
      console.warn(`SignalR: ${message}`);
    },
  };
}

export class LiveHub {
  #connection;
  #status = STATUS.connecting;
  #detail = "";
  #onStatus;
  #onConnected;
  #retryTimer = null;
  #starting = false;

  /**
   * @param {object} options
   * @param {string} options.url  the hub URL (the page's config says where)
   * @param {Record<string, (...args: any[]) => void>} options.handlers  server -> client targets
   * @param {(status: string, detail: string) => void} options.onStatus
   * @param {(hub: LiveHub) => void} options.onConnected  after every (re)start: the server holds no groups for us yet
   */
  constructor({ url, handlers, onStatus, onConnected }) {
    this.#onStatus = onStatus;
    this.#onConnected = onConnected;
    this.#connection = new signalR.HubConnectionBuilder()
      .withUrl(url)
      .withHubProtocol(new signalR.JsonHubProtocol())
      .withAutomaticReconnect(reconnectPolicy)
      .configureLogging(quietLogger())
      .build();
    for (const [target, handler] of Object.entries(handlers)) this.#connection.on(target, handler);
    this.#connection.onreconnecting(() => this.#setStatus(STATUS.reconnecting, "Connection lost; reconnecting…"));
    this.#connection.onreconnected(() => {
      this.#setStatus(STATUS.live, "");
      this.#onConnected(this);
    });
    this.#connection.onclose((error) => {
      if (this.#starting) return;
      this.#setStatus(STATUS.disconnected, error ? `${error.message}; retrying` : "Closed; retrying");
      this.#scheduleStart(START_RETRY_MS);
    });
    window.addEventListener("online", () => {
      if (this.#status === STATUS.disconnected) this.#scheduleStart(0);
    });
  }

  get status() {
    return this.#status;
  }

  get detail() {
    return this.#detail;
  }

  get isLive() {
    return this.#connection.state === signalR.HubConnectionState.Connected;
  }

  /** Start, retrying every 5 s until the first start succeeds. */
  start() {
    this.#scheduleStart(0);
  }

  /** Invoke a hub method; rejects when not connected or when the server answers with an error. */
  invoke(target, ...args) {
    return this.#connection.invoke(target, ...args);
  }

  #scheduleStart(delay) {
    clearTimeout(this.#retryTimer);
    this.#retryTimer = setTimeout(() => this.#tryStart(), delay);
  }

  async #tryStart() {
    if (this.#starting || this.#connection.state !== signalR.HubConnectionState.Disconnected) return;
    this.#starting = true;
    this.#setStatus(STATUS.connecting, "");
    try {
      await this.#connection.start();
    } catch (error) {
      this.#starting = false;
      this.#setStatus(STATUS.disconnected, `Server unreachable; retrying in ${START_RETRY_MS / 1000} s`);
      this.#scheduleStart(START_RETRY_MS);
      return;
    }
    this.#starting = false;
    this.#setStatus(STATUS.live, "");
    this.#onConnected(this);
  }

  #setStatus(status, detail) {
    this.#status = status;
    this.#detail = detail;
    this.#onStatus(status, detail);
  }
}
