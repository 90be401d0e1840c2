import { useState } from 'react';

/**
 * A destructive action asks for the name of what it acts on, typed: at 3 a.m. a click on the
 * wrong row must not start a disaster recovery or delete a VM.
 */
export function TypedConfirm(props: { name: string; action: string; onConfirm: () => void; onCancel: () => void }) {
  const [typed, setTyped] = useState('');
  return (
    <div className="confirm" role="dialog" aria-label={`confirm ${props.action}`}>
      <p>
        <strong>{props.action}</strong>: this cannot be undone from here. Type <code>{props.name}</code> to go on.
      </p>
      <input
        className="confirm-input"
        value={typed}
        onChange={(e) => setTyped(e.target.value)}
        placeholder={props.name}
        autoFocus
      />
      <button className="danger confirm-go" disabled={typed !== props.name} onClick={props.onConfirm}>
        {props.action}
      </button>
      <button onClick={props.onCancel}>Cancel</button>
    </div>
  );
}
