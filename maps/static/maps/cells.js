// Keeps the server's idea of our cells in step with the viewport.
// One updateMapGridGroups invocation in flight at a time; the latest wish wins.
// `confirmed` is what the server last accepted, so it is the next "previous".

import { cellKey, sameCells } from "./grid.js";

const RETRY_FIRST_MS = 5000;
const RETRY_MAX_MS = 60000;

export class CellSubscription {
  /** @type {((newCells: number[][], previousCells: number[][]) => Promise<unknown>) | null} */
  #invoke = null;
  #onChange;
  #wanted = [];
  #confirmed = [];
  #requested = null;
  #connected = false;
  #busy = false;
  #epoch = 0;
  #retryTimer = null;
  #failures = 0;

  /**
   * @param {object} options
   * @param {(state: {confirmed: number[][], kept: Set<string>, error: Error|null}) => void} options.onChange
   *   after each answer; `kept` is keptKeys() then
   */
  constructor({ onChange }) {
    this.#onChange = onChange;
  }

  /** The cells the server confirmed, as a copy. */
  get confirmed() {
    return this.#confirmed.map(([x, y]) => [x, y]);
  }

  /** Keys of the cells whose trackers belong on the map: confirmed, plus any being joined now. */
  keptKeys() {
    const keys = new Set(this.#confirmed.map(cellKey));
    for (const cell of this.#requested ?? []) keys.add(cellKey(cell));
    return keys;
  }

  /** The viewport's cells; an empty list leaves every cell (e.g. past the cell limit). */
  want(cells) {
    this.#wanted = cells;
    this.#sync();
  }

  /**
   * A fresh connection holds no groups: send everything again with previous = [],
   * through `invoke` (updateMapGridGroups on that connection).
   * @param {(newCells: number[][], previousCells: number[][]) => Promise<unknown>} invoke
   */
  connected(invoke) {
    this.#epoch += 1;
    this.#invoke = invoke;
    this.#connected = true;
    this.#busy = false;
    this.#requested = null;
    this.#confirmed = [];
    this.#sync(true);
  }

  disconnected() {
    this.#connected = false;
  }

  async #sync(force = false) {
    clearTimeout(this.#retryTimer);
    if (!this.#connected || this.#busy) return;
    const next = this.#wanted;
    const previous = this.#confirmed;
    if (!force && sameCells(next, previous)) return;
    if (force && next.length === 0 && previous.length === 0) return;
    const epoch = this.#epoch;
    this.#busy = true;
    this.#requested = next;
    let error = null;
    try {
      const result = await this.#invoke(next, previous);
      if (epoch !== this.#epoch) return;
      this.#confirmed = confirmedCells(result, next);
      this.#failures = 0;
    } catch (failure) {
      if (epoch !== this.#epoch) return;
      // The server changed nothing: keep `previous`, and try again later, less and less often.
      error = failure instanceof Error ? failure : new Error(String(failure));
      const delay = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** this.#failures);
      this.#failures += 1;
      this.#retryTimer = setTimeout(() => this.#sync(), delay);
    } finally {
      if (epoch === this.#epoch) {
        this.#busy = false;
        this.#requested = null;
      }
    }
    this.#onChange({ confirmed: this.confirmed, kept: this.keptKeys(), error });
    if (!error) this.#sync();
  }
}

/**
 * A completion may state the connection's cells (`{"cells": [[x, y], ...]}`);
 * otherwise success means the server now holds exactly what was asked.
 */
function confirmedCells(result, asked) {
  if (result && Array.isArray(result.cells) && result.cells.every(isCell)) return result.cells;
  return asked;
}

function isCell(value) {
  return Array.isArray(value) && value.length === 2 && value.every(Number.isInteger);
}
