import { ApiError } from '../api/client';

/** An API error as the API said it: its message and its code (what docs/errors.md explains). */
export function ErrorBox({ error }: { error: unknown }) {
  if (error === undefined || error === null) return null;
  const e = error instanceof ApiError ? error : new ApiError('CONSOLE', (error as Error).message ?? String(error), 0);
  return (
    <div className="error" role="alert" data-code={e.code}>
      <strong className="error-code">{e.code}</strong> <span className="error-message">{e.message}</span>
      {e.requestId ? <span className="muted"> (request {e.requestId})</span> : null}
    </div>
  );
}
