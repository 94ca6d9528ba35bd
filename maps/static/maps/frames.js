// Frames on demand: any part of the map asks for one, and at most one is
// pending. With many trackers a redraw costs milliseconds and updates trickle
// in all the time, so frames are spaced to keep drawing to about a fifth of
// the main thread, and never further apart than `maxGapMs`.

export class FrameLoop {
  #draw;
  #maxGapMs;
  #requested = false;
  #lastAt = -Infinity;
  #cost = 0;

  /**
   * @param {() => boolean} draw  one frame's work; true while something animates (another frame follows)
   * @param {{maxGapMs: number}} options
   */
  constructor(draw, { maxGapMs }) {
    this.#draw = draw;
    this.#maxGapMs = maxGapMs;
  }

  /** Ask for a frame. */
  request() {
    if (this.#requested) return;
    this.#requested = true;
    const wait = this.#lastAt + Math.min(this.#maxGapMs, this.#cost * 4) - performance.now();
    if (wait > 1) setTimeout(() => requestAnimationFrame(() => this.#run()), wait);
    else requestAnimationFrame(() => this.#run());
  }

  #run() {
    this.#requested = false;
    const startedAt = performance.now();
    const animating = this.#draw();
    this.#lastAt = startedAt;
    this.#cost = performance.now() - startedAt;
    if (animating) this.request();
  }
}
