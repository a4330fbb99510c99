// stress: browse arrivals ramp up stage by stage until the error rate or p99 latency breaks
// its limit; the run then stops (abortOnFail) and the summary names the knee: the last rate
// that held. 10% of journeys are checkouts.
//   cargo xtask load stress [--rate 3000] (the top rate; stages climb to it in 8 steps)
import { int } from '../lib/config.js';
import { createUsers, sessionFor } from '../lib/users.js';
import { summaryTrendStats } from '../lib/options.js';
import { textSummary } from '../lib/summary.js';
import { browseOnce, catalog, checkoutOnce } from '../lib/flows.js';

const top = int('RATE', 3000);
const steps = 8;
const stages = [];
for (let step = 1; step <= steps; step += 1) {
  const target = Math.round((top * step) / steps);
  stages.push({ target, duration: '10s' }, { target, duration: '20s' });
}

export const options = {
  setupTimeout: '5m',
  scenarios: {
    ramp: { executor: 'ramping-arrival-rate', startRate: Math.round(top / steps / 2), timeUnit: '1s', stages, preAllocatedVUs: 50, maxVUs: 400 },
  },
  thresholds: {
    http_req_failed: [{ threshold: 'rate<0.01', abortOnFail: true, delayAbortEval: '10s' }],
    'http_req_duration{api:browse}': [{ threshold: 'p(99)<500', abortOnFail: true, delayAbortEval: '10s' }],
  },
  summaryTrendStats,
};

export function setup() {
  return Object.assign(catalog(1000000), { users: createUsers(int('USERS', 50)), started: Date.now() });
}

export default function (data) {
  if (Math.random() < 0.1) {
    checkoutOnce(data, sessionFor(data.users).access, 30);
  } else {
    browseOnce(data);
  }
}

export function handleSummary(data) {
  // The knee: the arrival rate of the stage that was running when the run stopped (or the
  // top rate when nothing broke), from how long the ramp lasted.
  const seconds = data.state.testRunDurationMs / 1000;
  const stepIndex = Math.min(steps, Math.floor(seconds / 30));
  const broke = Object.values(data.metrics).some((m) => Object.values(m.thresholds || {}).some((t) => !t.ok));
  const knee = broke ? Math.round((top * Math.max(0, stepIndex - 1)) / steps) : top;
  const text = `${textSummary('stress', data)}knee: ${broke ? `limits broke at ~${Math.round((top * stepIndex) / steps)} arrivals/s; the last rate that held: ~${knee}/s` : `held up to the top rate ${top}/s (raise --rate)`}\n`;
  const dir = __ENV.RESULTS_DIR || 'results';
  return { stdout: text, [`${dir}/stress.json`]: JSON.stringify(data, null, 2), [`${dir}/stress.txt`]: text };
}
