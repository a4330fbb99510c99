// grpc: a client's gRPC API (k6/net/grpc with server reflection): the user service's GetMe
// and GetUser with each user's token. The product and cart methods are internal (ADR 0012):
// only the services call them, with their own tokens, so a client does not load them.
//   cargo xtask load grpc [--vus 10] [--duration 1m]
import { check } from 'k6';
import grpc from 'k6/net/grpc';
import { grpc as addresses, int, str } from '../lib/config.js';
import { createUsers, sessionFor } from '../lib/users.js';
import { summaryTrendStats } from '../lib/options.js';
import { summaryFor } from '../lib/summary.js';

export const options = {
  setupTimeout: '5m',
  scenarios: { grpc: { executor: 'constant-vus', vus: int('VUS', 10), duration: str('DURATION', '1m') } },
  thresholds: {
    checks: ['rate>0.999'],
    'grpc_req_duration{method:GetMe}': ['p(95)<50', 'p(99)<100'],
    'grpc_req_duration{method:GetUser}': ['p(95)<50', 'p(99)<100'],
  },
  summaryTrendStats,
};

const user = new grpc.Client();
let connected = false;

export function setup() {
  return { users: createUsers(int('USERS', int('VUS', 10))) };
}

export default function (data) {
  if (!connected) {
    user.connect(addresses.user, { plaintext: true, reflect: true, timeout: '5s' });
    connected = true;
  }
  const session = sessionFor(data.users);
  const auth = { authorization: `Bearer ${session.access}` };
  const me = user.invoke('shop.user.v1.UserService/GetMe', {}, { metadata: auth, tags: { method: 'GetMe' } });
  check(me, { 'GetMe: OK': (r) => r && r.status === grpc.StatusOK });
  const id = me && me.message && me.message.user ? me.message.user.id : session.id;
  const got = user.invoke('shop.user.v1.UserService/GetUser', { user_id: id }, { metadata: auth, tags: { method: 'GetUser' } });
  check(got, { 'GetUser (own): OK': (r) => r && r.status === grpc.StatusOK });
}

export const handleSummary = summaryFor('grpc');
