// smoke: one user walks every endpoint once, with strict checks (CI runs it on every change).
//   cargo xtask load smoke
import { check, fail, group, sleep } from 'k6';
import http from 'k6/http';
import grpc from 'k6/net/grpc';
import { admin, grpc as grpcAddr, metricsUrls, runId, urls } from '../lib/config.js';
import * as api from '../lib/api.js';
import { adminToken } from '../lib/users.js';
import { summaryTrendStats } from '../lib/options.js';
import { summaryFor } from '../lib/summary.js';

export const options = {
  scenarios: { smoke: { executor: 'shared-iterations', vus: 1, iterations: 1, maxDuration: '3m' } },
  thresholds: {
    checks: ['rate==1'],
    http_req_failed: ['rate==0'],
    checkout_stuck: ['count==0'],
    checkout_confirmed: ['count>=1'],
  },
  summaryTrendStats,
};

const client = new grpc.Client();

function json(response) {
  try {
    return response.json();
  } catch (_) {
    return {};
  }
}

function eventually(what, seconds, probe) {
  const deadline = Date.now() + seconds * 1000;
  while (Date.now() < deadline) {
    const value = probe();
    if (value) return value;
    sleep(0.2);
  }
  check(null, { [`${what} within ${seconds}s`]: () => false });
  return null;
}

export function setup() {
  for (const [name, url] of Object.entries(urls)) {
    const ready = http.get(`${url}/readyz`, { tags: { name: 'readyz', api: 'health' } });
    if (ready.status !== 200) fail(`${name} is not ready at ${url} (${ready.status}); start it with cargo xtask up`);
  }
  const token = adminToken(admin);
  const products = api.allProducts();
  if (products.length < 3) fail('the catalog is empty: cargo xtask seed');
  for (const product of products.slice(0, 3)) api.setStock(token, product.id, 100000);
  return { products: products.slice(0, 3) };
}

export default function (data) {
  const [first, second, third] = data.products;
  const email = `k6-smoke-${runId}@load.shop.local`;
  let session;

  group('health', () => {
    for (const [name, url] of Object.entries(urls)) {
      api.expect(http.get(`${url}/healthz`, { tags: { name: 'healthz', api: 'health' } }), `${name} healthz`, 200);
      const openapi = http.get(`${url}/openapi.json`, { tags: { name: 'openapi', api: 'health' } });
      api.expect(openapi, `${name} openapi`, 200, { [`${name} openapi: has paths`]: (r) => !!json(r).paths });
      const elsewhere = !!metricsUrls[name];
      const onApi = http.get(`${url}/metrics`, {
        tags: { name: 'metrics', api: 'health' },
        responseCallback: http.expectedStatuses(elsewhere ? 404 : 200),
      });
      if (elsewhere) {
        // The metrics port serves /metrics, and the API port (what the edge routes) does not.
        const metrics = http.get(`${metricsUrls[name]}/metrics`, { tags: { name: 'metrics', api: 'health' } });
        api.expect(metrics, `${name} metrics on the metrics port`, 200);
        api.expect(onApi, `${name} no metrics on the API port`, 404);
      } else {
        api.expect(onApi, `${name} metrics`, 200);
      }
    }
  });

  group('account', () => {
    api.expect(api.jwks(), 'jwks', 200, { 'jwks: has a key': (r) => (json(r).keys || []).length > 0 });
    api.expect(api.register(email, 'load-test-password-1', 'Smoke'), 'register', 201);
    const duplicate = api.register(email, 'load-test-password-1', 'Smoke');
    api.expect(duplicate, 'register twice', 409, { 'register twice: problem+json email_taken': (r) => api.isProblem(r) && json(r).code === 'email_taken' });
    const tokens = api.login(email, 'load-test-password-1');
    if (!tokens) fail('login failed');
    const rotated = api.refresh(tokens.refresh_token);
    session = { access: rotated.access_token, refresh: rotated.refresh_token };
    api.expect(api.me(session.access), 'me', 200, { 'me: email': (r) => json(r).email === email });
    api.expect(api.updateMe(session.access, 'Smoke Renamed'), 'update me', 200, { 'update me: name': (r) => json(r).name === 'Smoke Renamed' });
    const anonymous = http.get(`${urls.user}/v1/users/me`, { tags: { name: 'user_me', api: 'account' }, responseCallback: http.expectedStatuses(401) });
    api.expect(anonymous, 'me without a token', 401, { 'me without a token: problem+json': (r) => api.isProblem(r) });
  });

  group('browse', () => {
    api.expect(api.listProducts({ limit: 5 }), 'list', 200, { 'list: 5 items': (r) => (json(r).items || []).length === 5 });
    api.expect(api.listProducts({ q: first.name.split(' ')[0] }), 'search', 200, { 'search: finds it': (r) => (json(r).items || []).some((p) => p.id === first.id) });
    const cats = api.categories();
    api.expect(cats, 'categories', 200);
    const category = (json(cats).items || json(cats) || [])[0];
    if (category && category.slug) api.expect(api.listProducts({ category: category.slug }), 'by category', 200);
    api.expect(api.getProduct(first.id), 'detail', 200, { 'detail: id': (r) => json(r).id === first.id });
    const missing = api.getProduct('0190a8a0-0000-7000-8000-000000000000', [404]);
    api.expect(missing, 'unknown product', 404, { 'unknown product: problem+json': (r) => api.isProblem(r) });
    const bad = api.listProducts({ limit: 'many' }, [400, 422]);
    check(bad, { 'bad limit: 4xx problem': (r) => (r.status === 400 || r.status === 422) && api.isProblem(r) });
  });

  group('grpc', () => {
    // A client's gRPC: the user service's own methods with the customer's token.
    client.connect(grpcAddr.user, { plaintext: true, reflect: true, timeout: '5s' });
    const auth = { metadata: { authorization: `Bearer ${session.access}` } };
    const me = client.invoke('shop.user.v1.UserService/GetMe', {}, auth);
    check(me, { 'grpc GetMe: OK': (r) => r && r.status === grpc.StatusOK && r.message.user && r.message.user.email === email });
    const bad = client.invoke('shop.user.v1.UserService/GetUser', { user_id: 'not-a-uuid' }, auth);
    check(bad, { 'grpc GetUser bad id: INVALID_ARGUMENT': (r) => r && r.status === grpc.StatusInvalidArgument });
    client.close();
    // The product service's methods are internal (ADR 0012): a customer is refused.
    client.connect(grpcAddr.product, { plaintext: true, reflect: true, timeout: '5s' });
    const internal = client.invoke('shop.product.v1.ProductService/GetProduct', { product_id: first.id }, auth);
    check(internal, { 'grpc GetProduct as a customer: PERMISSION_DENIED': (r) => r && r.status === grpc.StatusPermissionDenied });
    const anonymous = client.invoke('shop.product.v1.ProductService/ReserveStock', { order_id: first.id, items: [] });
    check(anonymous, { 'grpc ReserveStock without a token: UNAUTHENTICATED': (r) => r && r.status === grpc.StatusUnauthenticated });
    client.close();
  });

  group('cart', () => {
    api.expect(api.putCartItem(session.access, first.id, 2), 'cart put', 200);
    api.expect(api.putCartItem(session.access, second.id, 1), 'cart put second', 200);
    api.expect(api.getCart(session.access), 'cart get', 200, { 'cart get: 2 lines': (r) => (json(r).items || []).length === 2 });
    check(api.deleteCartItem(session.access, second.id), { 'cart delete item: 2xx': (r) => r.status === 200 || r.status === 204 });
    const zero = api.putCartItem(session.access, first.id, 0, [422]);
    api.expect(zero, 'cart quantity 0', 422, { 'cart quantity 0: problem+json': (r) => api.isProblem(r) });
    check(api.clearCart(session.access), { 'cart clear: 2xx': (r) => r.status === 200 || r.status === 204 });
    const empty = api.placeOrder(session.access, 'tok_visa', `smoke-empty-${runId}`, [409]);
    api.expect(empty, 'order from an empty cart', 409, { 'empty cart: problem+json': (r) => api.isProblem(r) });
  });

  let confirmed;
  group('checkout', () => {
    confirmed = api.checkout(session.access, [[first.id, 1], [third.id, 2]], 'tok_visa', 30);
    check(confirmed, { 'checkout tok_visa: confirmed': (o) => o && o.status === 'confirmed' });
    api.expect(api.getCart(session.access), 'cart after checkout', 200, { 'cart after checkout: empty': (r) => (json(r).items || []).length === 0 });
    const paid = api.payments(session.access, confirmed.id);
    api.expect(paid, 'payments', 200, { 'payments: succeeded': (r) => (json(r).items || []).some((p) => p.status === 'succeeded') });

    const key = `smoke-replay-${runId}`;
    api.putCartItem(session.access, second.id, 1);
    const once = api.placeOrder(session.access, 'tok_chargeDeclined', key, [201]);
    const again = api.placeOrder(session.access, 'tok_chargeDeclined', key, [201]);
    check(again, { 'idempotent replay: same order': (r) => r.status === 201 && json(r).id === json(once).id });
    const declined = api.waitForOutcome(session.access, json(once).id, 30);
    check(declined, { 'tok_chargeDeclined: cancelled with a reason': (o) => o && o.status === 'cancelled' && !!o.failure_reason });

    api.expect(api.cancelOrder(session.access, confirmed.id), 'cancel confirmed', 200, { 'cancel: cancelled': (r) => json(r).status === 'cancelled' });
    eventually('refund', 30, () => (json(api.payments(session.access, confirmed.id)).items || []).some((p) => p.status === 'refunded'));
    api.expect(api.listOrders(session.access), 'orders', 200, { 'orders: both listed': (r) => (json(r).items || []).length >= 2 });
  });

  group('notifications', () => {
    const templates = eventually('welcome, confirmed and refunded notifications', 30, () => {
      const items = json(api.notifications(session.access)).items || [];
      const names = items.map((n) => n.template);
      return ['welcome', 'order_confirmed', 'payment_refunded'].every((t) => names.includes(t)) ? names : null;
    });
    check(templates, { 'notifications: welcome, order_confirmed, payment_refunded': (t) => t !== null });
  });

  group('logout', () => {
    check(api.logout(session.refresh), { 'logout: 2xx': (r) => r.status === 200 || r.status === 204 });
    const reused = http.post(`${urls.user}/v1/auth/refresh`, JSON.stringify({ refresh_token: session.refresh }), {
      headers: { 'content-type': 'application/json' },
      tags: { name: 'auth_refresh', api: 'auth' },
      responseCallback: http.expectedStatuses(401),
    });
    api.expect(reused, 'refresh after logout', 401);
  });
}

export const handleSummary = summaryFor('smoke');
