// Options every scenario shares.
export const summaryTrendStats = ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)', 'count'];

// Latency limits per endpoint group (`api` tag), for a platform on one developer machine.
export const latencyThresholds = {
  'http_req_duration{api:browse}': ['p(95)<100', 'p(99)<250'],
  'http_req_duration{api:cart}': ['p(95)<150', 'p(99)<300'],
  'http_req_duration{api:checkout}': ['p(95)<300', 'p(99)<600'],
  'http_req_duration{api:auth}': ['p(95)<500', 'p(99)<1000'],
  'http_req_duration{api:account}': ['p(95)<150', 'p(99)<300'],
};
