// checkout: registered users fill a cart, place an order and poll until it is confirmed.
//   cargo xtask load checkout [--vus 10] [--duration 1m]
// Fails if any order is still pending_payment when its poll gives up (30 s).
import { check } from 'k6';
import { int, str } from '../lib/config.js';
import { createUsers, sessionFor } from '../lib/users.js';
import { latencyThresholds, summaryTrendStats } from '../lib/options.js';

// The journey's own groups (setup's catalog listing is not part of it).
const checkoutLatency = Object.fromEntries(['cart', 'checkout', 'auth'].map((api) => [`http_req_duration{api:${api}}`, latencyThresholds[`http_req_duration{api:${api}}`]]));
import { summaryFor } from '../lib/summary.js';
import { catalog, checkoutOnce } from '../lib/flows.js';

const vus = int('VUS', 10);

export const options = {
  setupTimeout: '5m',
  scenarios: { checkout: { executor: 'constant-vus', vus, duration: str('DURATION', '1m') } },
  thresholds: Object.assign(
    {
      http_req_failed: ['rate<0.001'],
      checks: ['rate>0.999'],
      checkout_stuck: ['count==0'],
      checkout_cancelled: ['count==0'],
      checkout_confirmed: ['count>0'],
      order_to_confirmed: ['p(95)<1000', 'p(99)<2000'],
    },
    checkoutLatency,
  ),
  summaryTrendStats,
};

export function setup() {
  return Object.assign(catalog(1000000), { users: createUsers(int('USERS', vus)) });
}

export default function (data) {
  const session = sessionFor(data.users);
  const order = checkoutOnce(data, session.access, 30);
  check(order, { 'checkout: confirmed': (o) => o !== null && o.status === 'confirmed' });
}

export const handleSummary = summaryFor('checkout');
