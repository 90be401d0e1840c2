import { useState } from 'react';
import { send, type ApiError } from '../api/client';
import { ErrorBox } from '../components/error-box';
import { useAction } from '../components/use-action';

/** The token is checked by one API call before the console opens: a wrong one stays here with the API's error. */
export function LoginPage(props: { site: string; error: ApiError | undefined; onLogin: (token: string) => void }) {
  const [token, setToken] = useState('');
  const action = useAction();
  const submit = async (): Promise<void> => {
    const t = token.trim();
    const ok = await action.run(() => send('GET', '/vms', undefined, t));
    if (ok) props.onLogin(t);
  };
  return (
    <div className="login">
      <h1>mamori {props.site ? <span className="muted">· {props.site}</span> : null}</h1>
      <p>
        Sign in with the site's admin token (<code>DATA/admin-token</code>) or a user token.
      </p>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          void submit();
        }}
      >
        <input
          type="password"
          name="token"
          aria-label="API token"
          placeholder="API token"
          value={token}
          onChange={(e) => setToken(e.target.value)}
          autoFocus
        />
        <button type="submit" disabled={action.busy || token.trim() === ''}>
          Sign in
        </button>
      </form>
      <ErrorBox error={action.error ?? props.error} />
    </div>
  );
}
