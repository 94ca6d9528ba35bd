// The selected tracker, shared by the map, the tracker list and the details
// panel: one place says which tracker the operator picked and whether the map
// follows it. Every part listens for "change" and acts on its own.

export class Selection extends EventTarget {
  /** The selected tracker's id, or null. */
  id = null;
  /** Whether the map keeps the selected tracker centred. */
  following = false;

  /**
   * Select `id` (null: nothing). `reveal` asks the map to bring the tracker into view
   * (a pick from the list); a click on its marker does not need it.
   * @param {string|null} id
   * @param {{reveal?: boolean, source?: string}} [how]
   */
  select(id, { reveal = false, source = "" } = {}) {
    const previous = this.id;
    if (id === previous) {
      if (reveal) this.#changed({ previous, reveal, source });
      return;
    }
    this.id = id;
    if (id === null) this.following = false;
    this.#changed({ previous, reveal, source });
  }

  clear() {
    this.select(null);
  }

  /** Follow (keep centred) or stop following the selected tracker. */
  follow(on) {
    const following = Boolean(on) && this.id !== null;
    if (following === this.following) return;
    this.following = following;
    this.#changed({ previous: this.id, reveal: following, source: "follow" });
  }

  #changed({ previous, reveal, source }) {
    this.dispatchEvent(
      new CustomEvent("change", { detail: { id: this.id, previous, following: this.following, reveal, source } }),
    );
  }
}
