/**
 * One end of a cycle between two services (each needs the other): made before both, handed to
 * the first at construction inside a forwarding object, and bound to the second in one place
 * (the end of openSite's step 5). Used before then, it throws: that is a wiring mistake.
 */
export class Port<T extends object> {
  #target: T | null = null;
  readonly #what: string;

  constructor(what: string) {
    this.#what = what;
  }

  bind(target: T): void {
    if (this.#target) throw new Error(`${this.#what} is bound twice`);
    this.#target = target;
  }

  get target(): T {
    if (!this.#target) throw new Error(`${this.#what} was used before openSite bound it`);
    return this.#target;
  }

  /** For the one port whose events before binding go to no one (poweredOff, step 4). */
  get bound(): boolean {
    return this.#target !== null;
  }
}
