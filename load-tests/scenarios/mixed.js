// mixed: an open model (arrivals do not wait for responses) of a storefront: 80% browse,
// 15% cart edits, 5% checkouts, at RATE journeys per second in total. Every VU has its own
// user (USERS ≥ the 200 VUs the three scenarios may use), so journeys never share a cart.
//   cargo xtask load mixed [--rate 100] [--duration 2m]
import { int, str } from '../lib/config.js';
import { createUsers, sessionFor } from '../lib/users.js';
import { latencyThresholds, summaryTrendStats } from '../lib/options.js';
import { summaryFor } from '../lib/summary.js';
import { browseOnce, cartOnce, catalog, checkoutOnce } from '../lib/flows.js';

const rate = int('RATE', 100);
const duration = str('DURATION', '2m');
const arrivals = (share, maxVUs) => ({
  executor: 'constant-arrival-rate',
  rate: Math.max(1, Math.round(rate * share)),
  timeUnit: '1s',
  duration,
  preAllocatedVUs: Math.max(2, Math.round(maxVUs / 4)),
  maxVUs,
});

export const options = {
  setupTimeout: '5m',
  scenarios: {
    browse: Object.assign(arrivals(0.8, 100), { exec: 'browse' }),
    cart: Object.assign(arrivals(0.15, 50), { exec: 'cart' }),
    checkout: Object.assign(arrivals(0.05, 50), { exec: 'checkout' }),
  },
  thresholds: Object.assign(
    {
      http_req_failed: ['rate<0.001'],
      checks: ['rate>0.999'],
      dropped_iterations: ['count<10'],
      checkout_stuck: ['count==0'],
      order_to_confirmed: ['p(95)<1000'],
    },
    latencyThresholds,
  ),
  summaryTrendStats,
};

export function setup() {
  return Object.assign(catalog(1000000), { users: createUsers(int('USERS', 200)) });
}

export function browse(data) {
  browseOnce(data);
}

export function cart(data) {
  cartOnce(data, sessionFor(data.users).access);
}

export function checkout(data) {
  checkoutOnce(data, sessionFor(data.users).access, 30);
}

export const handleSummary = summaryFor('mixed');
