// A pool of registered users made in setup(), and per-VU sessions that refresh their access
// token before it expires (soak runs outlast the 15-minute token).
import { fail } from 'k6';
import { runId } from './config.js';
import { login, refresh, register } from './api.js';

const PASSWORD = 'load-test-password-1';

export function createUsers(count) {
  const users = [];
  for (let index = 0; index < count; index += 1) {
    const email = `k6-${runId}-${index}@load.shop.local`;
    const created = register(email, PASSWORD, `Load ${index}`);
    if (created.status !== 201) fail(`cannot register ${email}: ${created.status} ${created.body}`);
    const tokens = login(email, PASSWORD);
    if (!tokens) fail(`cannot log in ${email}`);
    users.push({ id: created.json().id, email, access: tokens.access_token, refresh: tokens.refresh_token, expiresIn: tokens.expires_in, at: Date.now() });
  }
  return users;
}

let session = null;

// This VU's user, with a fresh access token.
export function sessionFor(users) {
  if (!users || users.length === 0) fail('setup() made no users');
  if (session === null) session = Object.assign({}, users[(__VU - 1) % users.length]);
  const age = (Date.now() - session.at) / 1000;
  if (age > session.expiresIn * 0.8) {
    const tokens = refresh(session.refresh);
    if (tokens) {
      session.access = tokens.access_token;
      session.refresh = tokens.refresh_token;
      session.expiresIn = tokens.expires_in;
      session.at = Date.now();
    }
  }
  return session;
}

export function adminToken(admin) {
  const tokens = login(admin.email, admin.password);
  if (!tokens) fail(`cannot log in the admin ${admin.email}: set ADMIN_EMAIL / ADMIN_PASSWORD`);
  return tokens.access_token;
}
