// A minimal event emitter that works the same in browsers and Node (no dependency on
// node:events, so the library loads in a browser as it is).

export class Emitter {
  /** @type {Map<string, Set<Function>>} */
  #listeners = new Map();

  /**
   * Calls `listener` with each event named `name`; returns a function that removes it.
   * @param {string} name
   * @param {Function} listener
   * @returns {() => void}
   */
  on(name, listener) {
    let set = this.#listeners.get(name);
    if (!set) {
      set = new Set();
      this.#listeners.set(name, set);
    }
    set.add(listener);
    return () => this.off(name, listener);
  }

  /** @param {string} name @param {Function} listener */
  off(name, listener) {
    this.#listeners.get(name)?.delete(listener);
  }

  /**
   * Calls every listener of `name`. A listener that throws does not stop the others, nor the
   * client: its error is re-thrown asynchronously, where the host reports uncaught errors.
   * @param {string} name
   * @param {...unknown} args
   */
  emit(name, ...args) {
    for (const listener of [...(this.#listeners.get(name) ?? [])]) {
      try {
        listener(...args);
      } catch (error) {
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }
}
