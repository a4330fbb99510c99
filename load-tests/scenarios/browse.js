// browse: a storefront's read mix: list pages, searches, product details, categories.
//   cargo xtask load browse [--vus 20] [--duration 1m]
import { sleep } from 'k6';
import { int, str } from '../lib/config.js';
import * as api from '../lib/api.js';
import { latencyThresholds, summaryTrendStats } from '../lib/options.js';
import { summaryFor } from '../lib/summary.js';
import { browseOnce, catalog } from '../lib/flows.js';

export const options = {
  scenarios: { browse: { executor: 'constant-vus', vus: int('VUS', 20), duration: str('DURATION', '1m') } },
  thresholds: Object.assign({ http_req_failed: ['rate<0.001'], checks: ['rate>0.999'] }, latencyThresholds),
  summaryTrendStats,
};

export function setup() {
  return catalog();
}

export default function (data) {
  browseOnce(data);
  sleep(Math.random() * 0.2);
}

export const handleSummary = summaryFor('browse');
