/**
 * A URL as it may be shown (API answers, CLI output, logs, error messages): receivers put
 * credentials in the userinfo (https://user:pw@host) and in query values (?token=...).
 * Userinfo becomes `***@`, every query value `***` (the keys stay, to tell URLs apart; a
 * parameter without `=` is masked whole, as it may be a bare token), the fragment is dropped.
 * Text that is not a URL is masked by the same rules on its text.
 */
export function maskUrl(text: string): string {
  let u: URL;
  try {
    u = new URL(text.trim());
  } catch {
    return maskText(text);
  }
  const userinfo = u.username !== '' || u.password !== '' ? '***@' : '';
  const query = u.search === '' ? '' : `?${maskQuery(u.search.slice(1))}`;
  return `${u.protocol}//${userinfo}${u.host}${u.pathname}${query}`;
}

function maskQuery(query: string): string {
  return query
    .split('&')
    .map((p) => (p === '' ? p : p.includes('=') ? `${p.slice(0, p.indexOf('='))}=***` : '***'))
    .join('&');
}

function maskText(text: string): string {
  const noFragment = text.replace(/#.*$/s, '');
  const noUser = noFragment.replace(/^([^/?#]*\/\/)?[^/?#]*@/, '$1***@');
  const q = noUser.indexOf('?');
  return q < 0 ? noUser : `${noUser.slice(0, q)}?${maskQuery(noUser.slice(q + 1))}`;
}
