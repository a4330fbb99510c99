// soak: the mixed journeys at a moderate rate for a long time (default 30 minutes), to find
// leaks, growing latency and tokens that expire (sessions refresh theirs).
//   cargo xtask load soak [--rate 50] [--duration 30m]
import { int, str } from '../lib/config.js';
import { createUsers, sessionFor } from '../lib/users.js';
import { latencyThresholds, summaryTrendStats } from '../lib/options.js';
import { summaryFor } from '../lib/summary.js';
import { browseOnce, cartOnce, catalog, checkoutOnce } from '../lib/flows.js';

const rate = int('RATE', 50);

export const options = {
  setupTimeout: '5m',
  scenarios: {
    soak: { executor: 'constant-arrival-rate', rate, timeUnit: '1s', duration: str('DURATION', '30m'), preAllocatedVUs: 20, maxVUs: 100 },
  },
  thresholds: Object.assign({ http_req_failed: ['rate<0.001'], checks: ['rate>0.999'], checkout_stuck: ['count==0'] }, latencyThresholds),
  summaryTrendStats,
};

export function setup() {
  return Object.assign(catalog(1000000), { users: createUsers(int('USERS', 100)) });
}

export default function (data) {
  const roll = Math.random();
  if (roll < 0.8) browseOnce(data);
  else if (roll < 0.95) cartOnce(data, sessionFor(data.users).access);
  else checkoutOnce(data, sessionFor(data.users).access, 30);
}

export const handleSummary = summaryFor('soak');
