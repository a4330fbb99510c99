// Where the services are and what a run may do, from the environment (k6 -e or env vars).
//
//   BASE_URL        one gateway in front of every service (paths do not overlap), or
//   USER_URL ... NOTIFICATION_URL   one URL per service (default: `cargo xtask up`'s ports)
//   USER_METRICS_URL ... NOTIFICATION_METRICS_URL   where /metrics is when not on the API
//                   port (the charts serve it on 9464: the smoke then expects 404 on the API)
//   USER_GRPC, PRODUCT_GRPC         host:port for the gRPC checks (default: the REST port); the
//                   product methods are internal (ADR 0012): a client is refused there
//   ADMIN_EMAIL, ADMIN_PASSWORD     an admin, to top up stock before checkouts
//   USERS           size of the user pool made in setup() (default: 20)
//   VUS, DURATION, RATE             the size of the run (each scenario documents its own)

const gateway = __ENV.BASE_URL;
const local = (port) => `http://127.0.0.1:${port}`;

export const urls = {
  user: __ENV.USER_URL || gateway || local(8081),
  product: __ENV.PRODUCT_URL || gateway || local(8082),
  cart: __ENV.CART_URL || gateway || local(8083),
  order: __ENV.ORDER_URL || gateway || local(8084),
  payment: __ENV.PAYMENT_URL || gateway || local(8085),
  notification: __ENV.NOTIFICATION_URL || gateway || local(8086),
};

// Where each service's /metrics is, when it is not on its API URL (null: on the API URL).
export const metricsUrls = Object.fromEntries(
  Object.keys(urls).map((name) => [name, __ENV[`${name.toUpperCase()}_METRICS_URL`] || null]),
);

const hostPort = (url) => url.replace(/^https?:\/\//, '').replace(/\/.*$/, '');

export const grpc = {
  user: __ENV.USER_GRPC || hostPort(urls.user),
  product: __ENV.PRODUCT_GRPC || hostPort(urls.product),
};

export const admin = {
  email: __ENV.ADMIN_EMAIL || 'admin@shop.local',
  // In a cluster the password is a mounted Secret (ADMIN_PASSWORD_FILE).
  password: __ENV.ADMIN_PASSWORD || (__ENV.ADMIN_PASSWORD_FILE ? open(__ENV.ADMIN_PASSWORD_FILE).trim() : 'admin-password-change-me'),
};

export function int(name, fallback) {
  const value = __ENV[name];
  if (value === undefined || value === '') return fallback;
  const parsed = parseInt(value, 10);
  if (Number.isNaN(parsed) || parsed < 0) throw new Error(`${name} must be a non-negative integer, got ${value}`);
  return parsed;
}

export function str(name, fallback) {
  const value = __ENV[name];
  return value === undefined || value === '' ? fallback : value;
}

// A run id keeps the emails of parallel or repeated runs apart.
export const runId = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
