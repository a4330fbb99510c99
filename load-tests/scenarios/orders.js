// orders: places orders and does not wait for them — the open-loop driver of `cargo xtask
// bench`, which reads the saga's timings (placed → confirmed → notification stored) from the
// services' own databases afterwards, so no poll interval blurs them.
//   RATE=200 DURATION=15s   orders per second, open loop (constant-arrival-rate)
//   COUNT=10000 VUS=16      a fixed number of orders as fast as VUS buyers go (the backlog)
// Each VU is one buyer (USERS are made in setup()); an iteration sets one cart line and
// places the order. At a rate, each buyer's next order takes the next product, so a line the
// previous order's OrderPlaced has not cleared yet rides along instead of racing the clear;
// with COUNT every order of a buyer is one unit of the same product (nothing clears while the
// broker is down).
import { check } from 'k6';
import { int, str } from '../lib/config.js';
import { createUsers } from '../lib/users.js';
import { summaryTrendStats } from '../lib/options.js';
import { summaryFor } from '../lib/summary.js';
import { catalog } from '../lib/flows.js';
import * as api from '../lib/api.js';

const count = int('COUNT', 0);
const rate = int('RATE', 200);
const vus = int('VUS', 16);
const maxVus = count > 0 ? vus : int('MAX_VUS', 64);

export const options = {
  setupTimeout: '5m',
  scenarios: {
    orders:
      count > 0
        ? { executor: 'shared-iterations', vus, iterations: count, maxDuration: str('MAX_DURATION', '5m') }
        : {
            executor: 'constant-arrival-rate',
            rate,
            timeUnit: '1s',
            duration: str('DURATION', '15s'),
            preAllocatedVUs: Math.min(maxVus, 32),
            maxVUs: maxVus,
          },
  },
  thresholds: {
    http_req_failed: ['rate<0.01'],
    checks: ['rate>0.99'],
    // Named so the summary reports the order placement on its own.
    'http_req_duration{name:order_place}': ['p(99)<1000'],
  },
  summaryTrendStats,
};

export function setup() {
  const users = createUsers(int('USERS', maxVus));
  for (const user of users) api.clearCart(user.access);
  return Object.assign(catalog(1000000), { users });
}

export default function (data) {
  const user = data.users[(__VU - 1) % data.users.length];
  const step = count > 0 ? 0 : __ITER;
  const product = data.ids[(__VU + step) % data.ids.length];
  api.expect(api.putCartItem(user.access, product, 1), 'cart put', 200);
  const key = `bench-${__VU}-${__ITER}-${Date.now()}`;
  const placed = api.placeOrder(user.access, 'tok_visa', key);
  check(placed, { 'order placed: status 201': (r) => r.status === 201 });
}

export const handleSummary = summaryFor('orders');
