// Replacing the device's token (admins only): the new one is shown once.
import { useState } from 'react';
import { api } from '../../api';
import { Button, Card, ErrorBanner, Modal } from '../../ui';

export function Credentials({ device }: { device: string }) {
  const [confirming, setConfirming] = useState(false);
  const [token, setToken] = useState('');
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const [copied, setCopied] = useState('');

  const rotate = async () => {
    setBusy(true);
    setError(null);
    try {
      const r = await api<{ token: string }>(`/api/v1/devices/${encodeURIComponent(device)}/token`, { method: 'POST' });
      setToken(r.token);
      setCopied('');
      setConfirming(false);
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };

  const copy = async () => {
    try {
      await navigator.clipboard.writeText(token);
      setCopied('Copied.');
    } catch {
      setCopied('Copying is not allowed here: select the token and copy it.');
    }
  };

  return (
    <Card title="Credentials">
      <p className="muted">Replacing the token makes the current one stop working at once; the device must be given the new one.</p>
      <ErrorBanner error={confirming ? null : error} />
      <Button variant="danger" onClick={() => setConfirming(true)} data-testid="token-rotate">
        Replace token…
      </Button>
      {token ? (
        <div className="secret" role="status">
          <p>
            <strong>New token — shown only this once:</strong>
          </p>
          <code className="secret-value" data-testid="token-value" tabIndex={0}>
            {token}
          </code>
          <div className="row-actions">
            <Button onClick={copy}>Copy</Button>
            <Button onClick={() => setToken('')}>Hide</Button>
          </div>
          <span aria-live="polite" className="muted small">
            {copied}
          </span>
        </div>
      ) : null}
      {confirming ? (
        <Modal title="Replace the device's token?" onClose={() => setConfirming(false)}>
          <p>
            The device <code>{device}</code> will be refused until it uses the new token.
          </p>
          <ErrorBanner error={error} />
          <div className="row-actions">
            <Button onClick={() => setConfirming(false)}>Cancel</Button>
            <Button variant="danger" busy={busy} onClick={rotate} data-testid="token-confirm">
              Replace token
            </Button>
          </div>
        </Modal>
      ) : null}
    </Card>
  );
}
