// spike: a steady browse load jumps to 10x for 30 s and drops back; the platform must keep
// errors and latency in bounds through the jump and recover after it.
//   cargo xtask load spike [--rate 100] (the base rate)
import { int } from '../lib/config.js';
import { latencyThresholds, summaryTrendStats } from '../lib/options.js';
import { summaryFor } from '../lib/summary.js';
import { browseOnce, catalog } from '../lib/flows.js';

const base = int('RATE', 100);

export const options = {
  scenarios: {
    spike: {
      executor: 'ramping-arrival-rate',
      startRate: base,
      timeUnit: '1s',
      preAllocatedVUs: 50,
      maxVUs: 500,
      stages: [
        { target: base, duration: '30s' },
        { target: base * 10, duration: '5s' },
        { target: base * 10, duration: '30s' },
        { target: base, duration: '5s' },
        { target: base, duration: '30s' },
      ],
    },
  },
  thresholds: Object.assign({ http_req_failed: ['rate<0.01'], dropped_iterations: ['count<100'] }, latencyThresholds),
  summaryTrendStats,
};

export function setup() {
  return catalog();
}

export default function (data) {
  browseOnce(data);
}

export const handleSummary = summaryFor('spike');
