import { useCallback, useEffect, useRef, useState } from 'react';

export interface Loaded<T> {
  data: T | undefined;
  error: unknown;
  reload: () => void;
}

const GIVE_UP_WAITING_MS = 60_000;

/**
 * Loads once, and again every `refreshMs` when given (lists an operator watches during an
 * incident). A reload keeps the last data on screen; a failed one shows its error beside it.
 * A timed refresh waits for the load still out: starting another would drop that answer (the
 * effect's cleanup), so against a server slower than `refreshMs` no answer would ever land.
 * A reload asked for (after an action) or new deps start a fresh load at once; so does a
 * refresh once the load out has taken a minute (a request that never ends must not stop them).
 */
export function useLoad<T>(load: () => Promise<T>, deps: unknown[], refreshMs?: number): Loaded<T> {
  const [data, setData] = useState<T>();
  const [error, setError] = useState<unknown>();
  const [tick, setTick] = useState(0);
  const loadRef = useRef(load);
  loadRef.current = load;
  // When the load still out began (null: none out).
  const inFlight = useRef<number | null>(null);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  useEffect(() => {
    let live = true;
    inFlight.current = Date.now();
    loadRef
      .current()
      .then(
        (d) => {
          if (!live) return;
          setData(d);
          setError(undefined);
        },
        (e: unknown) => live && setError(e),
      )
      .finally(() => {
        if (live) inFlight.current = null;
      });
    return () => {
      live = false;
    };
  }, [...deps, tick]);
  useEffect(() => {
    if (!refreshMs) return;
    const t = setInterval(() => {
      const out = inFlight.current;
      if (out === null || Date.now() - out > GIVE_UP_WAITING_MS) reload();
    }, refreshMs);
    return () => clearInterval(t);
  }, [refreshMs, reload]);
  return { data, error, reload };
}
