// handleSummary for every scenario: writes load-tests/results/<scenario>.json (k6's whole
// summary) and <scenario>.txt, and prints the text: each threshold with its outcome, the
// latency of each endpoint group, and the checkout funnel.

function fmt(value, unit) {
  if (value === undefined || value === null || Number.isNaN(value)) return '-';
  if (unit === 'ms') return value >= 1000 ? `${(value / 1000).toFixed(2)}s` : `${value.toFixed(2)}ms`;
  if (unit === 'rate') return `${(value * 100).toFixed(2)}%`;
  return Number.isInteger(value) ? `${value}` : value.toFixed(2);
}

export function textSummary(name, data) {
  const lines = [`k6 ${name}`, ''];
  const metrics = data.metrics || {};
  const failed = [];
  lines.push('thresholds:');
  for (const [metric, value] of Object.entries(metrics).sort()) {
    for (const [threshold, result] of Object.entries(value.thresholds || {})) {
      lines.push(`  ${result.ok ? 'ok  ' : 'FAIL'} ${metric}: ${threshold}`);
      if (!result.ok) failed.push(`${metric}: ${threshold}`);
    }
  }
  lines.push('', 'latency (http_req_duration) by group and endpoint:');
  for (const [metric, value] of Object.entries(metrics).sort()) {
    if (!metric.startsWith('http_req_duration{') || !value.values) continue;
    const v = value.values;
    lines.push(`  ${metric.slice('http_req_duration'.length).padEnd(34)} p50 ${fmt(v.med, 'ms').padStart(9)}  p95 ${fmt(v['p(95)'], 'ms').padStart(9)}  p99 ${fmt(v['p(99)'], 'ms').padStart(9)}  max ${fmt(v.max, 'ms').padStart(9)}`);
  }
  const count = (metric) => (metrics[metric] && metrics[metric].values ? metrics[metric].values.count : 0);
  const requests = metrics.http_reqs && metrics.http_reqs.values;
  const errors = metrics.http_req_failed && metrics.http_req_failed.values;
  lines.push('', `requests: ${requests ? requests.count : 0} (${requests ? fmt(requests.rate) : 0}/s), unexpected statuses: ${errors ? fmt(errors.rate, 'rate') : '-'}`);
  if (metrics.checks) lines.push(`checks: ${fmt(metrics.checks.values.rate, 'rate')} passed`);
  if (count('checkout_started') > 0) {
    const latency = metrics.order_to_confirmed && metrics.order_to_confirmed.values;
    lines.push(
      `checkout funnel: started ${count('checkout_started')}, placed ${count('checkout_placed')}, confirmed ${count('checkout_confirmed')}, cancelled ${count('checkout_cancelled')}, stuck in pending_payment ${count('checkout_stuck')}`,
      `order → confirmed: p50 ${fmt(latency && latency.med, 'ms')}, p95 ${fmt(latency && latency['p(95)'], 'ms')}, p99 ${fmt(latency && latency['p(99)'], 'ms')}`,
    );
  }
  lines.push('', failed.length ? `RESULT: ${failed.length} threshold(s) failed` : 'RESULT: every threshold passed', '');
  return lines.join('\n');
}

export function summaryFor(name) {
  return (data) => {
    const text = textSummary(name, data);
    const dir = __ENV.RESULTS_DIR || 'results';
    return {
      stdout: text,
      [`${dir}/${name}.json`]: JSON.stringify(data, null, 2),
      [`${dir}/${name}.txt`]: text,
    };
  };
}
